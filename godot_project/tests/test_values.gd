extends "res://tests/support/test_case.gd"
## Every supported Variant type survives set_synced -> log -> live tree and read_synced.

const HOLDER := "res://tests/fixtures/holder.tscn"


static func values() -> Array:
	return [
		null,
		true,
		false,
		0,
		-7,
		1 << 62,
		-9007199254740993,
		0.1,
		-2.5e300,
		"",
		"text with \"quotes\", a\nnewline and ünïcödé",
		&"a_string_name",
		^"Some/Node:property",
		Vector2(1.5, -2.25),
		Vector2i(-3, 4),
		Vector3(1.5, -2.25, 3.125),
		Vector3i(1, -2, 3),
		Vector4(0.5, 1.5, -2.5, 4.0),
		Vector4i(1, 2, -3, 2147483647),
		Rect2(1.5, 2.5, 10, 20),
		Rect2i(-1, -2, 30, 40),
		Color(0.25, 0.5, 0.75, 1.0),
		Quaternion(0.5, -0.5, 0.5, 0.5),
		Basis(Vector3(1, 2, 3), Vector3(4, 5, 6), Vector3(7, 8, 9)),
		Transform2D(Vector2(1, 2), Vector2(3, 4), Vector2(5, 6)),
		Transform3D(Basis(Vector3(1, 0, 0), Vector3(0, 2, 0), Vector3(0, 0, 3)), Vector3(10, 11, 12)),
		[],
		[1, "two", 3.5, Vector2(1, 2), [true, null], {"k": &"v"}],
		{},
		{"a": 1, 2: "b", &"c": [1, 2], Vector2i(1, 2): null},
		PackedByteArray([0, 1, 255]),
		PackedInt32Array([-1, 2147483647]),
		PackedInt64Array([-(1 << 40), 1 << 62]),
		PackedFloat32Array([0.5, -1.25]),
		PackedFloat64Array([0.1, 1e300]),
		PackedStringArray(["a", "b c", ""]),
		PackedVector2Array([Vector2(1, 2), Vector2(-3, 4.5)]),
		PackedVector3Array([Vector3(1, 2, 3)]),
		PackedVector4Array([Vector4(1, 2, 3, 4)]),
		PackedColorArray([Color(1, 0, 0, 1), Color(0, 0.5, 1, 0.25)]),
	]


func test_every_supported_type_round_trips() -> void:
	var req = await done(tree.spawn(^".", &"H", HOLDER, {}))
	if not check_ok(req, "spawn the holder"):
		return
	var holder = tree.get_node(^"H")
	var applied: Array = []
	tree.property_applied.connect(func(_path, _property, value) -> void: applied.append(value))
	for value in values():
		var label := show(value)
		applied.clear()
		req = await done(tree.set_synced(^"H", &"v", value))
		if not check_ok(req, "set v = %s" % label):
			continue
		check_eq(holder.v, value, "live value after set_synced(%s)" % label)
		if check_eq(applied.size(), 1, "property_applied count for %s" % label):
			check_eq(applied[0], value, "property_applied value for %s" % label)
		req = await done(tree.read_synced(^"H", &"v"))
		if check_ok(req, "read v after %s" % label):
			check_eq(req.result, value, "read_synced(%s)" % label)


func test_values_as_spawn_props() -> void:
	# Several typed values at once, in the initial properties of a spawn.
	var props := {
		"position": Vector2(7, 8),
		"rotation": 0.5,
		"scale": Vector2(2, 2),
		"visible": false,
		"z_index": 3,
	}
	var req = await done(tree.spawn(^".", &"P", "Node2D", props))
	check_ok(req, "spawn with typed props")
	var node = tree.get_node_or_null(^"P")
	if check(node != null, "P spawned"):
		for key in props:
			check_eq(node.get(key), props[key], "live P.%s" % key)
	check_eq(tree.dump(),
		"P (Node2D)\n"
		+ "  .position = Vector2(7.0, 8.0)\n"
		+ "  .rotation = float(0.5)\n"
		+ "  .scale = Vector2(2.0, 2.0)\n"
		+ "  .visible = false\n"
		+ "  .z_index = 3\n",
		"dump lists props sorted by name in canonical form")
