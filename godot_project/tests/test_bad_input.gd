extends "res://tests/support/test_case.gd"
## Each bad input completes with ok == false, an error naming the problem, and nothing applied.


func test_bad_inputs_are_refused_and_change_nothing() -> void:
	var req = await done(tree.spawn(^".", &"Base", "Node2D", {"position": Vector2(1, 1)}))
	if not check_ok(req, "spawn Base"):
		return
	var dump_before: String = tree.dump()
	var count_before: int = tree.node_count()
	var applied: Array = []
	var spawned: Array = []
	var despawned: Array = []
	tree.property_applied.connect(func(p, k, v) -> void: applied.append([p, k, v]))
	tree.node_spawned.connect(func(p, _n) -> void: spawned.append(p))
	tree.node_despawned.connect(func(p) -> void: despawned.append(p))

	var cases := [
		["spawn under an unknown parent", tree.spawn(^"Nope", &"X", "Node", {}), ["Nope"]],
		["despawn an unknown path", tree.despawn(^"Ghost"), ["Ghost"]],
		["set on an unknown path", tree.set_synced(^"Ghost", &"position", Vector2.ZERO), ["Ghost"]],
		["read on an unknown path", tree.read_synced(^"Base/Ghost", &"position"), ["Base/Ghost"]],
		["duplicate name", tree.spawn(^".", &"Base", "Node", {}), ["Base"]],
		["scene that does not load", tree.spawn(^".", &"Y", "res://nope.tscn", {}), ["res://nope.tscn"]],
		["unknown class name", tree.spawn(^".", &"Z", "NoSuchClass", {}), ["NoSuchClass"]],
		["property the node lacks", tree.set_synced(^"Base", &"no_such_prop", 1), ["no_such_prop"]],
		["spawn prop the node lacks", tree.spawn(^".", &"W", "Node2D", {"nope_prop": 1}), ["nope_prop"]],
		["read a property the node lacks", tree.read_synced(^"Base", &"no_such_prop"), ["no_such_prop"]],
		["Callable value", tree.set_synced(^"Base", &"position", func() -> void: pass), ["Callable"]],
		["Object value", tree.set_synced(^"Base", &"position", RefCounted.new()), ["Object"]],
		["Callable in spawn props", tree.spawn(^".", &"V", "Node2D", {"position": func() -> void: pass}), ["Callable"]],
		["Callable inside an Array", tree.set_synced(^"Base", &"position", [1, func() -> void: pass]), ["Callable"]],
		["node name with '/'", tree.spawn(^".", &"a/b", "Node", {}), ["a/b"]],
		["despawn the SyncedTree itself", tree.despawn(^"."), []],
	]
	for c in cases:
		var completions: Array = []
		record_completion(c[1], completions)
		c.append(completions)
	for c in cases:
		await done(c[1])
	for c in cases:
		check_refused(c[1], c[2], c[0])
		# completed(ok, result): result is the error String when ok == false.
		check_eq(c[3], [[false, c[1].error]], "%s: completed(ok, result) arguments" % c[0])

	await frames(3)
	check_eq(tree.dump(), dump_before, "dump unchanged by refused requests")
	check_eq(tree.node_count(), count_before, "node_count unchanged by refused requests")
	check_eq(applied, [], "no property_applied for refused requests")
	check_eq(spawned, [], "no node_spawned for refused requests")
	check_eq(despawned, [], "no node_despawned for refused requests")
	check_eq(tree.get_node(^"Base").position, Vector2(1, 1), "Base.position unchanged")
	check_eq(tree.get_child_count(), 1, "no stray live child was added")

	# The tree still works after the refusals.
	req = await done(tree.set_synced(^"Base", &"position", Vector2(2, 2)))
	check_ok(req, "a valid write after the refusals")
	check_eq(tree.get_node(^"Base").position, Vector2(2, 2), "the valid write applied")


func test_refusal_in_a_frame_does_not_disturb_its_neighbours() -> void:
	var first = tree.spawn(^".", &"A", "Node", {})
	var bad = tree.spawn(^".", &"A", "Node", {})
	var last = tree.spawn(^".", &"B", "Node", {})
	await all_done([first, bad, last])
	check_ok(first, "first spawn of A")
	check_refused(bad, ["A"], "second spawn of A in the same frame")
	check_ok(last, "spawn of B after the refused one")
	check_eq(tree.dump(), "A (Node)\nB (Node)\n", "dump after a refused op between two good ones")


func test_a_synced_node_freed_by_game_code_is_reported_not_fatal() -> void:
	var req = await done(tree.spawn(^".", &"Doomed", "Node2D", {}))
	if not check_ok(req, "spawn Doomed"):
		return
	req = await done(tree.spawn(^".", &"Keeper", "Node2D", {}))
	check_ok(req, "spawn Keeper")
	# A first write, so the live tree has seen Doomed alive (it then skips the ObjectDB
	# lookup until some node leaves the scene tree).
	req = await done(tree.set_synced(^"Doomed", &"position", Vector2(1, 1)))
	check_ok(req, "a first write to Doomed")
	check_eq(tree.get_node(^"Doomed").position, Vector2(1, 1), "Doomed.position applied")
	# Game code frees a node synctree owns: the committed write to it cannot be carried out
	# on this server, which says so; the writes after it, in the same frame, still apply.
	tree.get_node(^"Doomed").free()
	var lost = tree.set_synced(^"Doomed", &"position", Vector2(5, 5))
	var kept = tree.set_synced(^"Keeper", &"position", Vector2(7, 7))
	await all_done([lost, kept])
	check_ok(lost, "the write commits (the replicated state still has the node)")
	check_ok(kept, "a write to another node after it")
	check_eq(tree.get_node(^"Keeper").position, Vector2(7, 7), "Keeper.position applied")
	# A node taken out of the tree, written while out (it is still alive), then freed.
	req = await done(tree.spawn(^".", &"Detached", "Node2D", {}))
	check_ok(req, "spawn Detached")
	var detached: Node2D = tree.get_node(^"Detached")
	tree.remove_child(detached)
	req = await done(tree.set_synced(^"Detached", &"position", Vector2(2, 2)))
	check_ok(req, "a write to a node out of the tree")
	check_eq(detached.position, Vector2(2, 2), "applied to the node out of the tree")
	detached.free()
	lost = tree.set_synced(^"Detached", &"position", Vector2(3, 3))
	kept = tree.set_synced(^"Keeper", &"position", Vector2(8, 8))
	await all_done([lost, kept])
	check_ok(kept, "a write to another node after the freed one")
	check_eq(tree.get_node(^"Keeper").position, Vector2(8, 8), "Keeper.position applied again")
	# Game code disconnects every handler of SceneTree.node_removed (synctree's among them),
	# then frees a node synctree has seen: the next frame connects synctree's again and no
	# longer trusts what it had seen.
	req = await done(tree.spawn(^".", &"Unwatched", "Node2D", {}))
	check_ok(req, "spawn Unwatched")
	req = await done(tree.set_synced(^"Unwatched", &"position", Vector2(4, 4)))
	check_ok(req, "a first write to Unwatched")
	var scene_tree: SceneTree = runner
	for c in scene_tree.get_signal_connection_list("node_removed"):
		scene_tree.node_removed.disconnect(c["callable"])
	tree.get_node(^"Unwatched").free()
	lost = tree.set_synced(^"Unwatched", &"position", Vector2(6, 6))
	kept = tree.set_synced(^"Keeper", &"position", Vector2(9, 9))
	await all_done([lost, kept])
	check_ok(kept, "a write to another node after the freed, unwatched one")
	check_eq(tree.get_node(^"Keeper").position, Vector2(9, 9), "Keeper.position applied once more")
	check(scene_tree.get_signal_connection_list("node_removed").size() > 0, "synctree watches removals again")
