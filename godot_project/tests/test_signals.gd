extends "res://tests/support/test_case.gd"
## node_spawned / property_applied / node_despawned fire with the right arguments, before the
## request that caused them completes.


func test_signals_carry_path_node_property_value() -> void:
	var spawned: Array = []
	var applied: Array = []
	var despawned: Array = []
	tree.node_spawned.connect(func(path, node) -> void: spawned.append([path, node]))
	tree.property_applied.connect(func(path, property, value) -> void: applied.append([path, property, value]))
	tree.node_despawned.connect(func(path) -> void: despawned.append([path]))

	var req = await done(tree.spawn(^".", &"S1", "Node2D", {}))
	check_ok(req, "spawn S1")
	if check_eq(spawned.size(), 1, "node_spawned count after one spawn"):
		check_eq(spawned[0][0], ^"S1", "node_spawned path")
		check(spawned[0][1] is Node2D, "node_spawned node is the Node2D")
		check(spawned[0][1] == tree.get_node_or_null(^"S1"), "node_spawned node is the live S1")

	req = await done(tree.spawn(^"S1", &"Inner", "res://demo_world.tscn", {}))
	check_ok(req, "spawn S1/Inner")
	if check_eq(spawned.size(), 2, "node_spawned count after a nested spawn"):
		check_eq(spawned[1][0], ^"S1/Inner", "nested node_spawned path")
		check(spawned[1][1] == tree.get_node_or_null(^"S1/Inner"), "nested node_spawned node")

	applied.clear()
	req = await done(tree.set_synced(^"S1", &"position", Vector2(5, 6)))
	check_ok(req, "set S1.position")
	check_eq(applied, [[^"S1", &"position", Vector2(5, 6)]], "property_applied after set_synced")

	applied.clear()
	req = await done(tree.set_synced(^"S1/Inner", &"health", 42))
	check_ok(req, "set S1/Inner.health")
	check_eq(applied, [[^"S1/Inner", &"health", 42]], "property_applied on a nested node")

	req = await done(tree.despawn(^"S1"))
	check_ok(req, "despawn S1")
	check(despawned.size() >= 1, "node_despawned fired")
	if despawned.size() >= 1:
		check_eq(despawned[0][0], ^"S1", "node_despawned path")
	check(tree.get_node_or_null(^"S1") == null, "S1 is gone when node_despawned has fired")


func test_request_completes_after_the_call_returns() -> void:
	var req = tree.spawn(^".", &"Later", "Node", {})
	check(req != null, "spawn returns a SyncRequest")
	check(not req.done, "completion is never emitted inside the call")
	var got: Array = await req.completed
	check_eq(got, [true, null], "completed(ok, result) arguments")
	check(req.done and req.ok, "done and ok after completed")
	check_eq(req.error, "", "no error on success")

	var bad = tree.despawn(^"Nobody")
	check(not bad.done, "a refusal also completes later")
	got = await bad.completed
	check_eq(got.size(), 2, "completed has two arguments")
	if got.size() == 2:
		check_eq(got[0], false, "completed ok == false for a refusal")
		check_eq(got[1], bad.error, "completed result is the error String")
