extends "res://tests/support/test_case.gd"
## SyncedMultiplayerAPI installs as the scene tree's MultiplayerAPI and answers as a server.


func test_installs_and_answers_as_a_server() -> void:
	var api = ClassDB.instantiate("SyncedMultiplayerAPI")
	check(api != null, "SyncedMultiplayerAPI is registered")
	if api == null:
		return
	check(api is MultiplayerAPI, "it is a MultiplayerAPI")
	var scene_tree: SceneTree = runner
	var previous := scene_tree.get_multiplayer()
	scene_tree.set_multiplayer(api)
	check(scene_tree.get_multiplayer() == api, "set_multiplayer installs it")
	check_eq(api.get_unique_id(), 1, "a dedicated server's unique id")
	check(api.is_server(), "is_server() on a dedicated server")
	check_eq(api.get_peers(), PackedInt32Array(), "no client peers yet")
	check_eq(api.poll(), OK, "poll() without a peer")
	# Godot registers nodes with object_configuration_add, starting with a null object.
	var node := Node.new()
	scene_tree.root.add_child(node)
	check_eq(api.object_configuration_add(null, null), OK, "configuration of the null object")
	check_eq(api.object_configuration_remove(null, null), OK, "removal of the null object")
	node.queue_free()
	scene_tree.set_multiplayer(previous)


func test_the_addon_autoload_installs_it_when_the_setting_is_on() -> void:
	var scene_tree: SceneTree = runner
	var previous := scene_tree.get_multiplayer()
	var key := "synctree/multiplayer/replace_scene_multiplayer"
	var had: bool = ProjectSettings.get_setting(key, false)
	var autoload_script := load("res://addons/synctree/multiplayer_autoload.gd")
	check(autoload_script != null, "the addon ships its multiplayer autoload")
	if autoload_script == null:
		return
	ProjectSettings.set_setting(key, false)
	var off: Node = autoload_script.new()
	scene_tree.root.add_child(off)
	check(scene_tree.get_multiplayer() == previous, "setting off: SceneMultiplayer stays")
	off.queue_free()
	ProjectSettings.set_setting(key, true)
	var on: Node = autoload_script.new()
	scene_tree.root.add_child(on)
	check(scene_tree.get_multiplayer().get_class() == "SyncedMultiplayerAPI", "setting on: SyncedMultiplayerAPI installed")
	on.queue_free()
	ProjectSettings.set_setting(key, had)
	scene_tree.set_multiplayer(previous)


func test_a_spawned_node_freed_by_game_code_is_not_announced_and_the_frame_goes_on() -> void:
	var scene_tree: SceneTree = runner
	var previous := scene_tree.get_multiplayer()
	var api = ClassDB.instantiate("SyncedMultiplayerAPI")
	scene_tree.set_multiplayer(api)
	# A MultiplayerSpawner watching the SyncedTree: committed spawns are announced on it.
	var spawner := MultiplayerSpawner.new()
	scene_tree.root.add_child(spawner)
	spawner.spawn_path = spawner.get_path_to(tree)
	await scene_tree.process_frame
	await scene_tree.process_frame
	var heard: Array = []
	spawner.spawned.connect(func(node: Node) -> void: heard.append(String(node.name)))
	# Game code frees one node as it is spawned, before the spawner is told of it.
	var free_doomed := func(_path: NodePath, node: Node) -> void:
		if node.name == &"Doomed":
			node.free()
	tree.node_spawned.connect(free_doomed)
	var doomed = tree.spawn(^".", &"Doomed", "Node2D", {})
	var kept = tree.spawn(^".", &"Kept", "Node2D", {})
	await all_done([doomed, kept])
	check_ok(doomed, "the spawn of Doomed commits")
	check_ok(kept, "the spawn of Kept, in the same frame, commits")
	check(tree.get_node_or_null(^"Kept") != null, "Kept was applied")
	check(tree.get_node_or_null(^"Doomed") == null, "Doomed is gone")
	check_eq(heard, ["Kept"], "the spawner heard of the live node only")
	tree.node_spawned.disconnect(free_doomed)
	spawner.queue_free()
	scene_tree.set_multiplayer(previous)


func test_game_code_may_call_the_api_while_a_synchronizer_replicates() -> void:
	var scene_tree: SceneTree = runner
	var previous := scene_tree.get_multiplayer()
	var api = ClassDB.instantiate("SyncedMultiplayerAPI")
	scene_tree.set_multiplayer(api)
	var req = tree.spawn(^".", &"Nosy", "res://tests/fixtures/nosy.tscn", {})
	await all_done([req])
	check_ok(req, "the spawn of Nosy commits")
	var nosy = tree.get_node_or_null(^"Nosy")
	if not check(nosy != null, "Nosy was applied"):
		scene_tree.set_multiplayer(previous)
		return
	# This server (the leader) is the authority of a synchronizer watching hp: replicating
	# reads hp, and its getter asks the API for this process's id.
	var sync := MultiplayerSynchronizer.new()
	var config := SceneReplicationConfig.new()
	config.add_property(NodePath(":hp"))
	config.property_set_replication_mode(NodePath(":hp"), SceneReplicationConfig.REPLICATION_MODE_ON_CHANGE)
	sync.replication_config = config
	nosy.add_child(sync)
	sync.root_path = sync.get_path_to(nosy)
	nosy.seen_ids.clear()
	nosy.hp = 5
	for i in 20:
		await scene_tree.process_frame
	var ids: Array = nosy.seen_ids
	check(ids.size() > 1, "the getter ran while replicating (%d calls)" % ids.size())
	check(not ids.has(0), "the API answered every call from game code, never failing: %s" % [ids])
	sync.queue_free()
	scene_tree.set_multiplayer(previous)
