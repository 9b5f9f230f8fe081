extends "res://tests/support/test_case.gd"
## spawn / set / read / despawn through the public API, with the canonical dump checked exactly.


func test_spawn_set_read_despawn() -> void:
	var req = await done(tree.spawn(^".", &"N1", "Node2D", {"position": Vector2(1, 2)}))
	check_ok(req, "spawn N1")
	check_eq(req.result, null, "result of a successful write")
	check_eq(tree.dump(), "N1 (Node2D)\n  .position = Vector2(1.0, 2.0)\n", "dump after spawn")
	var node = tree.get_node_or_null(^"N1")
	if check(node is Node2D, "N1 is a live Node2D child of the SyncedTree"):
		check_eq(node.position, Vector2(1, 2), "live position after spawn")

	req = await done(tree.set_synced(^"N1", &"position", Vector2(3, 4)))
	check_ok(req, "set N1.position")
	check_eq(tree.dump(), "N1 (Node2D)\n  .position = Vector2(3.0, 4.0)\n", "dump after set")
	if node != null:
		check_eq(node.position, Vector2(3, 4), "live position after set")

	req = await done(tree.read_synced(^"N1", &"position"))
	check_ok(req, "read N1.position")
	check_eq(req.result, Vector2(3, 4), "read_synced result")

	req = await done(tree.spawn(^"N1", &"Child", "res://demo_world.tscn", {"health": 7, "color": Color(1, 0, 0, 1)}))
	check_ok(req, "spawn N1/Child from a scene file")
	req = await done(tree.spawn(^"", &"N2", "Node", {}))
	check_ok(req, "spawn N2 under ^\"\"")
	check_eq(tree.dump(),
		"N1 (Node2D)\n"
		+ "  .position = Vector2(3.0, 4.0)\n"
		+ "  Child (res://demo_world.tscn)\n"
		+ "    .color = Color(1.0, 0.0, 0.0, 1.0)\n"
		+ "    .health = 7\n"
		+ "N2 (Node)\n",
		"dump with a nested scene node")
	check_eq(tree.node_count(), 3, "node_count with a nested node")
	var child = tree.get_node_or_null(^"N1/Child")
	if check(child != null, "N1/Child exists in the live tree"):
		check_eq(child.health, 7, "live N1/Child.health")
		check_eq(child.scene_file_path, "res://demo_world.tscn", "N1/Child was instantiated from its scene")

	req = await done(tree.read_synced(^"N1/Child", &"health"))
	check_ok(req, "read N1/Child.health")
	check_eq(req.result, 7, "read N1/Child.health")

	req = await done(tree.despawn(^"N1"))
	check_ok(req, "despawn N1")
	check_eq(tree.dump(), "N2 (Node)\n", "dump after despawning N1 (and its child)")
	check_eq(tree.node_count(), 1, "node_count after despawn")
	check(tree.get_node_or_null(^"N1") == null, "N1 left the live tree")

	req = await done(tree.despawn(^"N2"))
	check_ok(req, "despawn N2")
	check_eq(tree.dump(), "", "dump of an empty tree")
	check_eq(tree.node_count(), 0, "node_count of an empty tree")


func test_status_getters() -> void:
	check(tree.is_running(), "is_running")
	check(tree.is_leader(), "a single server is leader")
	check_eq(tree.leader_id(), 1, "leader_id")
	check(tree.term() >= 1, "term >= 1, got %d" % tree.term())
	var before: int = tree.applied_index()
	var req = await done(tree.spawn(^".", &"A", "Node", {}))
	check_ok(req, "spawn A")
	check(tree.commit_index() > before, "commit_index advanced past %d (now %d)" % [before, tree.commit_index()])
	check(tree.applied_index() > before, "applied_index advanced past %d (now %d)" % [before, tree.applied_index()])
	check(tree.applied_index() <= tree.commit_index(), "applied_index <= commit_index")
	var status: Dictionary = tree.status()
	for key in ["id", "leader", "is_leader", "term", "commit", "applied", "nodes"]:
		check(status.has(key), "status() has '%s' (got %s)" % [key, status])
	check_eq(status.get("id"), 1, "status.id")
	check_eq(status.get("leader"), 1, "status.leader")
	check_eq(status.get("is_leader"), true, "status.is_leader")
	check_eq(status.get("term"), tree.term(), "status.term")
	check_eq(status.get("nodes"), 1, "status.nodes")
	check(int(status.get("applied", 0)) >= before + 1, "status.applied")


func test_start_stop_and_bad_config() -> void:
	var other = ClassDB.instantiate("SyncedTree")
	other.name = "Other"
	other.node_id = 1
	other.listen_address = "127.0.0.1:0"
	other.in_memory = true
	other.autostart = false
	var leaders: Array = []
	other.leader_changed.connect(func(id: int) -> void: leaders.append(id))
	tree.get_parent().add_child(other)
	check(not other.is_running(), "autostart = false: not running after _ready")
	check(other.start(), "start() with a valid configuration")
	check(other.is_running(), "is_running after start()")
	var deadline := Time.get_ticks_msec() + 10_000
	while not leaders.has(1) and Time.get_ticks_msec() < deadline:
		await frames(1)
	check(leaders.has(1), "leader_changed(1) emitted after start (got %s)" % [leaders])
	other.stop()
	check(not other.is_running(), "not running after stop()")
	other.queue_free()

	var bad = ClassDB.instantiate("SyncedTree")
	bad.name = "Bad"
	bad.node_id = 1
	bad.listen_address = "127.0.0.1:0"
	bad.peers = "this is not a peer list"
	bad.in_memory = true
	bad.autostart = false
	tree.get_parent().add_child(bad)
	check(not bad.start(), "start() refuses a malformed peers list")
	check(not bad.is_running(), "not running after a refused start()")
	bad.queue_free()


func test_raft_timing_from_project_settings() -> void:
	var keys := ["synctree/raft/heartbeat_ms", "synctree/raft/election_timeout_min_ms",
			"synctree/raft/election_timeout_max_ms"]
	var make := func(node_name: String):
		var t = ClassDB.instantiate("SyncedTree")
		t.name = node_name
		t.node_id = 1
		t.in_memory = true
		t.autostart = false
		tree.get_parent().add_child(t)
		return t
	# An election timeout not above the heartbeat is refused, naming the settings.
	ProjectSettings.set_setting(keys[0], 50)
	ProjectSettings.set_setting(keys[1], 40)
	var bad = make.call("BadTiming")
	check(not bad.start(), "start() refuses election_timeout_min_ms <= heartbeat_ms")
	bad.queue_free()
	# Faster timing is taken and the server elects itself.
	ProjectSettings.set_setting(keys[0], 20)
	ProjectSettings.set_setting(keys[1], 60)
	ProjectSettings.set_setting(keys[2], 120)
	var fast = make.call("FastTiming")
	check(fast.start(), "start() with tuned Raft timing")
	var deadline := Time.get_ticks_msec() + 10_000
	while not fast.is_leader() and Time.get_ticks_msec() < deadline:
		await frames(1)
	check(fast.is_leader(), "a one-server cluster with tuned timing elects itself")
	fast.stop()
	fast.queue_free()
	for k in keys:
		ProjectSettings.set_setting(k, null)


func test_compare_and_set() -> void:
	var req = await done(tree.spawn(^".", &"Counter", "Node2D", {}))
	if not check_ok(req, "spawn Counter"):
		return
	req = await done(tree.compare_and_set(^"Counter", &"position", null, Vector2(1, 0)))
	check_ok(req, "null matches a property never synced")
	req = await done(tree.compare_and_set(^"Counter", &"position", Vector2(9, 9), Vector2(2, 0)))
	check(not req.ok, "a stale expected value is refused")
	check(str(req.error).contains("found") and str(req.error).contains("compare_and_set"),
			"the error names the call and what it found: %s" % req.error)
	check_eq(tree.get_node(^"Counter").position, Vector2(1, 0), "refused: value unchanged")
	req = await done(tree.compare_and_set(^"Counter", &"position", Vector2(1, 0), Vector2(2, 0)))
	check_ok(req, "the current value matches")
	check_eq(tree.get_node(^"Counter").position, Vector2(2, 0), "applied")
	req = await done(tree.read_synced(^"Counter", &"position"))
	check_eq(req.result, Vector2(2, 0), "read back")
	req = await done(tree.compare_and_set(^"Counter", &"nope", null, 1))
	check(not req.ok and str(req.error).contains("nope"), "unknown property refused: %s" % req.error)


func test_property_paths() -> void:
	# A property of a child node ("Body:position") and a component (":position:x"), as
	# MultiplayerSynchronizer configs name them (NodePath form).
	var req = await done(tree.spawn(^".", &"P", "Node2D", {}))
	check_ok(req, "spawn P")
	req = await done(tree.spawn(^"P", &"Body", "Node2D", {}))
	check_ok(req, "spawn P/Body")
	req = await done(tree.set_synced(^"P", &"Body:position", Vector2(5, 6)))
	check_ok(req, "set P's Body:position")
	req = await done(tree.set_synced(^"P", &":position:x", 7.0))
	check_ok(req, "set P's :position:x")
	var p = tree.get_node_or_null(^"P")
	if check(p != null, "P is live"):
		check_eq(p.get_node(^"Body").position, Vector2(5, 6), "Body:position reached the child")
		check_eq(p.position, Vector2(7, 0), ":position:x set one component")
	check_eq(tree.dump(),
		"P (Node2D)\n"
		+ "  .:position:x = float(7.0)\n"
		+ "  .Body:position = Vector2(5.0, 6.0)\n"
		+ "  Body (Node2D)\n",
		"dump shows property paths with their live values")
	req = tree.set_synced(^"P", &"Nope:modulate", Color(1, 0, 0, 1))
	await done(req)
	check(not req.ok, "a path to a missing child is refused")
	check(str(req.error).contains("Nope:modulate"), "the refusal names the path: %s" % req.error)
	req = await done(tree.despawn(^"P"))
	check_ok(req, "despawn P")
