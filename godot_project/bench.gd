extends RefCounted
## Benchmark commands of the control protocol, used by `cargo xtask bench`. Times are wall
## clock microseconds (`Time.get_unix_time_from_system`), comparable across the server
## processes of one machine.
##   {"cmd":"watch_property","path":P,"property":Q}  start recording when each int value of P.Q
##                                                    is applied to this server's live tree
##        (with "poll":true: each new int value seen frame by frame, e.g. eventual writes)
##   {"cmd":"watch_result","stop":true}              -> {"values":[...],"usec":[...]}; stop unless
##                                                    "stop" is false
##   {"cmd":"set_load","path":P,"property":Q,"start":S,"count":N,"inflight":K,"interval_usec":I}
##        set P.Q to S, S+1, ... keeping K requests in flight, and (with I) starting the i-th
##        no sooner than i*I after the first -> {"calls_usec":[...],"failed":F,
##        "start_usec":..,"end_usec":..}; with "eventual":true, `set_eventual` calls (nothing
##        to wait for) paced the same way
##   {"cmd":"wait_value","path":P,"property":Q,"value":V}  wait until the int P.Q >= V on this
##        server's live tree -> {"usec":t} (when it was seen)
##   {"cmd":"watch_spawns","prefix":X,"count":N}      record when N more nodes are under the
##                                                    SyncedTree (polled each frame, after it applied)
##   {"cmd":"watch_spawns_result"}                    -> {"seen":n,"done_usec":t} (poll until n = N)
##   {"cmd":"spawn_load","prefix":X,"count":N,"scene":S}  N spawns in one frame -> {"start_usec":..}
##   {"cmd":"add_child_baseline","count":N,"scene":S} plain instantiate + add_child of N, timed
##   {"cmd":"apply_cost","path":P,"property":Q,"count":N,"rounds":R}  SyncedTree.measure_apply_cost
##   {"cmd":"spawn_cost","scene":S,"count":N,"rounds":R,"parent":P}  SyncedTree.measure_spawn_cost

var _world
var _tree: SceneTree
var _watch_path := NodePath()
var _watch_property := StringName()
var _watch_values := PackedInt64Array()
var _watch_usec := PackedInt64Array()
var _watch_polling := 0  # the current poll's number: an older poll stops
var _spawn_count := 0
var _spawn_seen := 0
var _spawn_done_usec := 0


func _init(world, tree: SceneTree) -> void:
	_world = world
	_tree = tree


static func now_usec() -> int:
	return int(Time.get_unix_time_from_system() * 1_000_000.0)


func handle(request: Dictionary) -> Dictionary:
	match request.get("cmd"):
		"watch_property":
			_watch_path = NodePath(str(request.get("path", "")))
			_watch_property = StringName(str(request.get("property", "")))
			_watch_values = PackedInt64Array()
			_watch_usec = PackedInt64Array()
			_watch_polling += 1
			if request.get("poll", false):
				_poll_property(_watch_polling)
			elif not _world.property_applied.is_connected(_on_property_applied):
				_world.property_applied.connect(_on_property_applied)
			return {"ok": true}
		"watch_result":
			if request.get("stop", true):
				_watch_polling += 1
				if _world.property_applied.is_connected(_on_property_applied):
					_world.property_applied.disconnect(_on_property_applied)
			return {"ok": true, "values": Array(_watch_values), "usec": Array(_watch_usec)}
		"set_load":
			return await _set_load(request)
		"wait_value":
			return await _wait_value(request)
		"watch_spawns":
			_spawn_count = int(request.get("count", 0))
			_spawn_seen = 0
			_spawn_done_usec = 0
			_poll_spawns(_world.get_child_count(), _spawn_count)
			return {"ok": true}
		"watch_spawns_result":
			return {"ok": true, "seen": _spawn_seen, "done_usec": _spawn_done_usec}
		"spawn_load":
			return await _spawn_load(request)
		"add_child_baseline":
			return _add_child_baseline(request)
		"apply_cost":
			var d: Dictionary = _world.measure_apply_cost(NodePath(str(request.get("path"))),
					StringName(str(request.get("property"))), int(request.get("count", 10000)),
					int(request.get("rounds", 5)))
			d["ok"] = true
			return d
		"spawn_cost":
			var c: Dictionary = _world.measure_spawn_cost(str(request.get("scene")),
					int(request.get("count", 1000)), int(request.get("rounds", 5)),
					str(request.get("parent", "")))
			c["ok"] = not c.is_empty()
			return c
	return {"ok": false, "error": "unknown bench cmd %s" % JSON.stringify(request.get("cmd"))}


func _on_property_applied(path: NodePath, property: StringName, value) -> void:
	if path == _watch_path and property == _watch_property and typeof(value) == TYPE_INT:
		_watch_values.append(value)
		_watch_usec.append(now_usec())


## Records each new int value of the watched property, frame by frame, while watch `run` is
## the current one.
func _poll_property(run: int) -> void:
	var last = null
	while run == _watch_polling:
		var node: Node = _world.get_node_or_null(_watch_path)
		var v = node.get(_watch_property) if node != null else null
		if typeof(v) == TYPE_INT and v != last:
			last = v
			_watch_values.append(v)
			_watch_usec.append(now_usec())
		await _tree.process_frame


## Watches, frame by frame, for `count` more children than `before`; no per-node handler, so
## the measure adds nothing to the apply path.
func _poll_spawns(before: int, count: int) -> void:
	var deadline := Time.get_ticks_msec() + 60_000
	while Time.get_ticks_msec() < deadline:
		_spawn_seen = maxi(0, _world.get_child_count() - before)
		if _spawn_seen >= count:
			_spawn_done_usec = now_usec()
			return
		await _tree.process_frame


func _set_load(request: Dictionary) -> Dictionary:
	var path := NodePath(str(request.get("path")))
	var property := StringName(str(request.get("property")))
	var start := int(request.get("start", 0))
	var count := int(request.get("count", 1000))
	var inflight := maxi(1, int(request.get("inflight", 1)))
	var interval := int(request.get("interval_usec", 0))
	var eventual: bool = request.get("eventual", false)
	var calls := PackedInt64Array()
	calls.resize(count)
	# Requests complete in the order they were issued (one server's batches commit in order;
	# a refusal may come early and is counted when the head reaches it).
	var pending: Array = []
	pending.resize(count)
	var head := 0
	var next := 0
	var failed := 0
	var first_error := ""
	var started := now_usec()
	while head < count:
		while next < count and next - head < inflight and now_usec() >= started + next * interval:
			calls[next] = now_usec()
			if eventual:
				if not _world.set_eventual(path, property, start + next):
					failed += 1
					first_error = "set_eventual refused (see the log)"
			else:
				pending[next] = _world.set_synced(path, property, start + next)
			next += 1
		await _tree.process_frame
		while eventual and head < next:
			head += 1
		while head < next and pending[head].done:
			var r = pending[head]
			if not r.ok:
				failed += 1
				if first_error == "":
					first_error = r.error
			pending[head] = null
			head += 1
	return {"ok": true, "calls_usec": Array(calls), "failed": failed, "first_error": first_error,
			"start_usec": started, "end_usec": now_usec()}


func _wait_value(request: Dictionary) -> Dictionary:
	var target := int(request.get("value", 0))
	var deadline := Time.get_ticks_msec() + 30_000
	while Time.get_ticks_msec() < deadline:
		var node: Node = _world.get_node_or_null(NodePath(str(request.get("path"))))
		if node != null:
			var v = node.get(StringName(str(request.get("property"))))
			if typeof(v) == TYPE_INT and v >= target:
				return {"ok": true, "usec": now_usec()}
		await _tree.process_frame
	return {"ok": false, "error": "value %d not reached in 30 s" % target}


func _spawn_load(request: Dictionary) -> Dictionary:
	var prefix := str(request.get("prefix", "S"))
	var count := int(request.get("count", 100))
	var scene := str(request.get("scene", "Node"))
	var started := now_usec()
	var reqs: Array = []
	for i in count:
		reqs.append(_world.spawn(^".", StringName("%s%d" % [prefix, i]), scene))
	for r in reqs:
		while not r.done:
			await _tree.process_frame
	var failed := reqs.filter(func(r): return not r.ok).size()
	return {"ok": true, "start_usec": started, "failed": failed}


func _add_child_baseline(request: Dictionary) -> Dictionary:
	var count := int(request.get("count", 100))
	var scene_path := str(request.get("scene", ""))
	var packed: PackedScene = load(scene_path) if scene_path.begins_with("res://") else null
	var holder := Node.new()
	_tree.root.add_child(holder)
	var started := Time.get_ticks_usec()
	for i in count:
		var node: Node = packed.instantiate() if packed != null else ClassDB.instantiate(scene_path)
		node.name = "B%d" % i
		holder.add_child(node)
	var usec := Time.get_ticks_usec() - started
	holder.queue_free()
	return {"ok": true, "usec": usec}
