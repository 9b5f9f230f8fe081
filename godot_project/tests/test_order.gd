extends "res://tests/support/test_case.gd"
## Many requests issued in one frame: all complete, and the live tree applies them in issue order.

const COUNT := 1000


func test_thousand_spawns_in_one_frame() -> void:
	var order: Array[String] = []
	tree.node_spawned.connect(func(path, _node) -> void: order.append(str(path)))
	var names: Array[String] = []
	var reqs: Array = []
	var started := Time.get_ticks_usec()
	for i in COUNT:
		var name := "N%04d" % i
		names.append(name)
		reqs.append(tree.spawn(^".", StringName(name), "Node2D", {"position": Vector2(i, -i)}))
	var issue_frame := Engine.get_process_frames()
	await all_done(reqs)
	var usec := Time.get_ticks_usec() - started
	print("    %d spawns issued in one frame applied in %.1f ms over %d frames"
		% [COUNT, usec / 1000.0, Engine.get_process_frames() - issue_frame])
	var failed := 0
	for req in reqs:
		if not req.ok:
			failed += 1
			if failed <= 3:
				check_ok(req, "one of the %d spawns" % COUNT)
	check_eq(failed, 0, "failed spawns")
	check_eq(tree.node_count(), COUNT, "node_count")
	check_eq(tree.get_child_count(), COUNT, "live children")
	var live: Array[String] = []
	for child in tree.get_children():
		live.append(str(child.name))
	check(live == names, "live children are in issue order")
	check(order == names, "node_spawned fired in issue order")
	var dump_names: Array[String] = []
	for line in tree.dump().split("\n", false):
		if not line.begins_with(" "):
			dump_names.append(line.get_slice(" ", 0))
	check(dump_names == names, "dump lists the nodes in issue order")
	var n500 = tree.get_node_or_null(^"N0500")
	if check(n500 != null, "N0500 exists"):
		check_eq(n500.position, Vector2(500, -500), "N0500 props applied")


func test_writes_apply_in_issue_order() -> void:
	var req = await done(tree.spawn(^".", &"H", "res://tests/fixtures/holder.tscn", {}))
	if not check_ok(req, "spawn holder"):
		return
	var seen: Array = []
	tree.property_applied.connect(func(_p, _k, value) -> void: seen.append(value))
	var reqs: Array = []
	var expected: Array = []
	for i in 300:
		reqs.append(tree.set_synced(^"H", &"v", i))
		expected.append(i)
	await all_done(reqs)
	for r in reqs:
		if not r.ok:
			check_ok(r, "set v")
			break
	check_eq(seen, expected, "property_applied values in issue order")
	check_eq(tree.get_node(^"H").v, 299, "the last issued value wins")
	req = await done(tree.read_synced(^"H", &"v"))
	check_ok(req, "read v")
	check_eq(req.result, 299, "read_synced sees the last write")


func test_dependent_ops_in_one_frame() -> void:
	# Each op is only valid if every op before it was applied first.
	var reqs: Array = [
		tree.spawn(^".", &"X", "Node", {}),
		tree.spawn(^"X", &"Y", "Node2D", {}),
		tree.set_synced(^"X/Y", &"position", Vector2(1, 2)),
		tree.despawn(^"X"),
		tree.spawn(^".", &"X", "Node2D", {}),
		tree.set_synced(^"X", &"position", Vector2(3, 4)),
	]
	await all_done(reqs)
	for i in reqs.size():
		check_ok(reqs[i], "op %d of a dependent chain" % i)
	check_eq(tree.dump(), "X (Node2D)\n  .position = Vector2(3.0, 4.0)\n", "dump after the chain")
