extends Node
## Dedicated-server scene: one SyncedTree (`World`, configured from the command-line user args
## `-- --synctree-id=... --synctree-listen=... --synctree-peers=...`; with
## `--synctree-connect=... --synctree-token=... --synctree-ca=...` it runs as a game client of
## such servers, driven the same way) and, when
## `--synctree-control=PORT` is given, a control server on 127.0.0.1:PORT that `cargo xtask demo`
## and the end-to-end tests drive.
##
## Control protocol: newline-delimited JSON, one reply line per request line, requests of one
## connection answered in order, several connections served at once.
##   {"cmd":"status"}  -> {"ok":true,"status":{...SyncedTree.status()...}}
##   {"cmd":"dump"}    -> {"ok":true,"dump":"..."}
##   {"cmd":"batch","ops":[op, ...]} -> {"ok":true,"results":[{"ok":..,"error":..,"value":..,
##                                       "maybe_applied":..}], "elapsed_usec":N}
##       op: {"op":"spawn","parent":"","name":"N1","scene":"Node2D","props":{"position":"Vector2(1, 2)"}}
##           {"op":"set","path":"N1","property":"position","value":"Vector2(3, 4)"}
##           {"op":"despawn","path":"N1"}
##           {"op":"read","path":"N1","property":"position"}   (result "value": var_to_str)
##           {"op":"cas","path":"N1","property":"v","expected":"null","value":"3"}
##       A failed op says whether it may have taken effect all the same ("maybe_applied":
##       a timeout, a lost leader) or certainly did not.
##       Values are var_to_str strings. All ops of a batch are issued in the same frame, then
##       awaited.
##   {"cmd":"membership","action":"add_learner"|"promote"|"remove","id":N,"address":"HOST:PORT"}
##                     -> {"ok":..,"error":..,"result":{"index":..,"voters":[..],"learners":[..]}}
##       (SyncedTree.add_learner / promote_to_voter / remove_server; address for add_learner)
##   {"cmd":"predict","path":"P","property":"position","value":"Vector2(1, 2)"}   (game client;
##       or "values":[..]: that many predicted writes in one frame)
##                     -> {"ok":true,"written":..,"error":..,"shown_at_once":..,"final":..,
##                         "reconciled":[{..}]}
##       A predicted set_synced (SyncedTree.set_predicted): what the node showed right after
##       the call, what it shows once the write completed, and the prediction_reconciled
##       signals seen meanwhile ({predicted, committed, reason}).
##   {"cmd":"rpc","to":PEER,"method":"ping","value":V} -> {"ok":true,"error":ERR}: Probe.rpc_id
##   {"cmd":"rpc_log"} -> {"ok":true,"calls":[{method, sender, value, on}]}: rpcs Probe ran
##   {"cmd":"new_api"} -> installs a fresh SyncedMultiplayerAPI (a game setting up again)
##   {"cmd":"node_rpc","path":"P","method":"poke","value":V} -> {"ok":true,"error":ERR}:
##       rpc() of a method of the node at P under World, to every peer (game code)
##   {"cmd":"spawn_player","peer":P} -> adds res://game/player.tscn named P under World (game
##       code; PlayerSpawner and its MultiplayerSynchronizer replicate it); with "poke":V,
##       then at once player.rpc("poke", V)
##   {"cmd":"spawn_bullet","id":N,"from":"Vector2(1, 2)","angle":0.5} -> {"name":..}:
##       BulletSpawner.spawn(data) (a custom spawn_function; spawn_limit 3); name "" if refused
##   {"cmd":"visibility","path":"P","public":false,"peer":7,"visible":true} -> sets the
##       visibility of P's MultiplayerSynchronizer (P/Sync) here (game code)
##   {"cmd":"instance","path":"P"} -> {"id": the node's instance id, 0 if none}
##   {"cmd":"move","path":"P","position":"Vector2(1, 2)"} -> sets the node's position locally
##   {"cmd":"set_local","path":"P/Body","property":"modulate","value":"Color(1, 0, 0, 1)"} ->
##       sets a property of any node under World locally (game code)
##   {"cmd":"eventual","path":"P","property":"rotation","value":"1.5"} -> {"written":..}:
##       SyncedTree.set_eventual
##   {"cmd":"get","path":"P","property":"rotation"} -> {"value": var_to_str of the live value}
##   {"cmd":"free","path":"P"} -> queue_free() of a node under World (game code)
##   {"cmd":"multiplayer"} -> {"ok":true,"unique_id":..,"peers":[..],"is_server":..,
##                             "events":[multiplayer signals seen, e.g. "peer_connected 7"]}
##   {"cmd":"quit"}    -> {"ok":true}, then the server stops.
##   Benchmark commands (cargo xtask bench): see bench.gd.
## A malformed request gets {"ok":false,"error":"..."}.

const CONTROL_ARG := "--synctree-control="
## Demo of SyncedTree.auth_callback: admit clients whose token starts with this prefix even
## though the servers' token list does not hold them (guests).
const GUEST_ARG := "--demo-guest-prefix="
## The Godot way of setting up networking, on synctree: a server creates an ENet server peer
## on this UDP port (`multiplayer.multiplayer_peer = peer`); clients reach it through it.
const ENET_LISTEN_ARG := "--demo-enet-listen="
## A game client's ENet client peer to a server's HOST:PORT (no --synctree-connect needed: the
## client's SyncedTree joins through the peer).
const ENET_CONNECT_ARG := "--demo-enet-connect="
## The same with a WebSocketMultiplayerPeer (TCP port; clients connect to ws://HOST:PORT).
const WS_LISTEN_ARG := "--demo-ws-listen="
const WS_CONNECT_ARG := "--demo-ws-connect="
## Keep Godot's own SceneMultiplayer instead of installing SyncedMultiplayerAPI: the same game
## code on the built-in, for the tests that compare the two.
const SCENE_MULTIPLAYER_ARG := "--demo-scene-multiplayer"
## Benchmarks: no GDScript handlers recording the multiplayer signals (the tests read them;
## the SceneMultiplayer baseline scene has none).
const NO_EVENT_LOG_ARG := "--demo-no-event-log"
## A request line longer than this closes the connection.
const MAX_LINE_BYTES := 64 * 1024 * 1024
## A request of a batch that has not completed after this long is reported as failed.
const REQUEST_TIMEOUT_MSEC := 60_000
## The SyncedTree must be running this long after start, or the server exits with an error.
const START_TIMEOUT_MSEC := 30_000


class Client:
	var peer: StreamPeerTCP
	var buffer := PackedByteArray()
	var queue: Array[String] = []
	var busy := false
	var closed := false

	func _init(p: StreamPeerTCP) -> void:
		peer = p


# Untyped on purpose: this script also parses when the extension is not loaded (the
# scene then reports the missing SyncedTree class itself).
@onready var world = $World

var _control_port := 0
var _server: TCPServer
var _clients: Array[Client] = []
var _ready_printed := false
var _scene_multiplayer := false
var _started_msec := 0
var _quitting := false
var _bench: RefCounted
## The multiplayer API's signals seen so far ("connected_to_server", "peer_connected 7", ...).
var _mp_events: Array[String] = []

## Benchmark commands, served by bench.gd (see there).
const BENCH_COMMANDS := ["watch_property", "watch_result", "set_load", "watch_spawns",
		"watch_spawns_result", "spawn_load", "add_child_baseline", "apply_cost", "wait_value",
		"spawn_cost"]


## Records the multiplayer API's and spawners' signals in `_mp_events` (for the tests).
func _log_multiplayer_events() -> void:
	for signal_name in ["connected_to_server", "connection_failed", "server_disconnected"]:
		multiplayer.connect(signal_name, func() -> void: _mp_events.append(signal_name))
	multiplayer.peer_connected.connect(func(id: int) -> void: _mp_events.append("peer_connected %d" % id))
	multiplayer.peer_disconnected.connect(func(id: int) -> void: _mp_events.append("peer_disconnected %d" % id))
	get_tree().node_added.connect(func(node: Node) -> void:
		if node is MultiplayerSynchronizer:
			node.synchronized.connect(func() -> void:
				var event := "synchronized %s" % node.get_parent().name
				if not _mp_events.has(event):
					_mp_events.append(event)))
	for spawner in [$PlayerSpawner, $BulletSpawner]:
		for signal_name in ["spawned", "despawned"]:
			spawner.connect(signal_name, func(node: Node) -> void: _mp_events.append("%s %s" % [signal_name, node.name]))


func _ready() -> void:
	_started_msec = Time.get_ticks_msec()
	if world == null or not world.has_method("dump"):
		_fail_startup("the World node is not a SyncedTree: is the synctree extension built and loaded? (run `cargo xtask build`)")
		return
	world.leader_changed.connect(_on_leader_changed)
	# Multiplayer through the cluster: rpcs reach peers on any server (see rpc_probe.gd).
	_scene_multiplayer = OS.get_cmdline_user_args().has(SCENE_MULTIPLAYER_ARG)
	if not _scene_multiplayer:
		get_tree().set_multiplayer(ClassDB.instantiate("SyncedMultiplayerAPI"))
	if not OS.get_cmdline_user_args().has(NO_EVENT_LOG_ARG):
		_log_multiplayer_events()
	for arg in OS.get_cmdline_user_args():
		if arg.begins_with(GUEST_ARG):
			var prefix := arg.substr(GUEST_ARG.length())
			world.auth_callback = func(_peer: int, token: String):
				return true if token.begins_with(prefix) else "token '%s' is neither on the list nor a guest's" % token
		if arg.begins_with(ENET_LISTEN_ARG) or arg.begins_with(ENET_CONNECT_ARG) \
				or arg.begins_with(WS_LISTEN_ARG) or arg.begins_with(WS_CONNECT_ARG):
			var err := _game_peer(arg)
			if err != "":
				_fail_startup(err)
				return
		if arg.begins_with(CONTROL_ARG):
			var text := arg.substr(CONTROL_ARG.length())
			if not text.is_valid_int() or int(text) < 1 or int(text) > 65535:
				_fail_startup("invalid %s'%s': expected a TCP port 1..65535" % [CONTROL_ARG, text])
				return
			_control_port = int(text)
	if _control_port != 0:
		_server = TCPServer.new()
		var err := _server.listen(_control_port, "127.0.0.1")
		if err != OK:
			_fail_startup("cannot listen for control connections on 127.0.0.1:%d: %s" % [_control_port, error_string(err)])
			return


## Sets up an ENet or WebSocket peer as a SceneMultiplayer game would; returns an error
## message or "".
func _game_peer(arg: String) -> String:
	var websocket := arg.begins_with(WS_LISTEN_ARG) or arg.begins_with(WS_CONNECT_ARG)
	var peer: MultiplayerPeer = WebSocketMultiplayerPeer.new() if websocket else ENetMultiplayerPeer.new()
	var value := arg.split("=", true, 1)[1]
	var err: Error
	if arg.begins_with(ENET_LISTEN_ARG) or arg.begins_with(WS_LISTEN_ARG):
		if not value.is_valid_int():
			return "invalid %s: expected a port" % arg
		err = peer.create_server(int(value))
	else:
		var colon := value.rfind(":")
		if colon < 1 or not value.substr(colon + 1).is_valid_int():
			return "invalid %s: expected HOST:PORT" % arg
		if websocket:
			err = peer.create_client("ws://" + value)
		else:
			err = peer.create_client(value.substr(0, colon), int(value.substr(colon + 1)))
	if err != OK:
		return "cannot create the multiplayer peer (%s): %s" % [arg, error_string(err)]
	multiplayer.multiplayer_peer = peer
	return ""


func _process(_delta: float) -> void:
	if _quitting:
		return
	if not _ready_printed and _scene_multiplayer:
		# The built-in: ready once its peer is connected.
		var peer := multiplayer.multiplayer_peer
		if peer != null and not peer is OfflineMultiplayerPeer and peer.get_connection_status() == MultiplayerPeer.CONNECTION_CONNECTED:
			_ready_printed = true
			var server_id := 1 if multiplayer.is_server() else 0
			print("SYNCTREE READY id=%d control=%d peer=%d" % [server_id, _control_port, multiplayer.get_unique_id()])
		return
	if not _ready_printed:
		# A game client is ready once a server has welcomed (or refused) it.
		var client_done: bool = world.is_client() and (world.is_client_connected() or str(world.status().get("refused", "")) != "")
		if world.is_running() and (not world.is_client() or client_done):
			_ready_printed = true
			print("SYNCTREE READY id=%d control=%d peer=%d" % [int(world.status().get("id", world.node_id)), _control_port, world.peer_id()])
		elif Time.get_ticks_msec() - _started_msec > START_TIMEOUT_MSEC:
			_fail_startup("the SyncedTree did not start within %d ms (see the errors above)" % START_TIMEOUT_MSEC)
			return
		else:
			return
	if _server == null:
		return
	while _server.is_connection_available():
		var peer := _server.take_connection()
		if peer != null:
			peer.set_no_delay(true)
			_clients.append(Client.new(peer))
	for client in _clients.duplicate():
		_poll_client(client)


func _on_leader_changed(leader_id: int) -> void:
	print("SYNCTREE LEADER id=%d leader=%d term=%d" % [int(world.status().get("id", 0)), leader_id, world.term()])


func _fail_startup(message: String) -> void:
	push_error(message)
	printerr("SYNCTREE FAILED: " + message)
	_quitting = true
	get_tree().quit(1)


# --- connections -----------------------------------------------------------------------------

func _poll_client(client: Client) -> void:
	var peer := client.peer
	peer.poll()
	var status := peer.get_status()
	if status != StreamPeerTCP.STATUS_CONNECTED:
		if status != StreamPeerTCP.STATUS_CONNECTING:
			_drop(client)
		return
	var available := peer.get_available_bytes()
	if available > 0:
		var got: Array = peer.get_partial_data(available)
		if got[0] != OK:
			_drop(client)
			return
		client.buffer.append_array(got[1])
	while true:
		var newline := client.buffer.find(10)
		if newline < 0:
			break
		var line := client.buffer.slice(0, newline).get_string_from_utf8().strip_edges()
		client.buffer = client.buffer.slice(newline + 1)
		if not line.is_empty():
			client.queue.append(line)
	if client.buffer.size() > MAX_LINE_BYTES:
		_send(client, _error("request line longer than %d bytes; closing the connection" % MAX_LINE_BYTES))
		_drop(client)
		return
	if not client.busy and not client.queue.is_empty():
		_serve(client)


func _drop(client: Client) -> void:
	client.closed = true
	client.peer.disconnect_from_host()
	_clients.erase(client)


func _send(client: Client, reply: Dictionary) -> void:
	if client.closed or client.peer.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		return
	var err := client.peer.put_data((JSON.stringify(reply) + "\n").to_utf8_buffer())
	if err != OK:
		_drop(client)


## Answers the queued requests of one connection in order (a coroutine: batches await).
func _serve(client: Client) -> void:
	client.busy = true
	while not client.queue.is_empty() and not client.closed:
		var line: String = client.queue.pop_front()
		var reply: Dictionary = await _handle(line)
		_send(client, reply)
		if _quitting:
			_quit_after_reply()
			return
	client.busy = false


func _quit_after_reply() -> void:
	for client in _clients.duplicate():
		_drop(client)
	if _server != null:
		_server.stop()
	world.stop()
	get_tree().quit(0)


# --- requests --------------------------------------------------------------------------------

func _error(message: String) -> Dictionary:
	return {"ok": false, "error": message}


func _handle(line: String) -> Dictionary:
	var json := JSON.new()
	if json.parse(line) != OK:
		return _error("malformed JSON (line %d): %s" % [json.get_error_line(), json.get_error_message()])
	var request = json.data
	if typeof(request) != TYPE_DICTIONARY:
		return _error("a request must be a JSON object such as {\"cmd\":\"status\"}")
	var cmd = request.get("cmd")
	match cmd:
		"status":
			return {"ok": true, "status": world.status()}
		"dump":
			return {"ok": true, "dump": world.dump()}
		"batch":
			return await _batch(request)
		"membership":
			return await _membership(request)
		"predict":
			return await _predict(request)
		"node_rpc":
			var callee = world.get_node_or_null(NodePath(str(request.get("path", ""))))
			if callee == null:
				return _error("node_rpc: no node at %s" % request.get("path"))
			var sent: int = callee.rpc(StringName(str(request.get("method", ""))), request.get("value"))
			return {"ok": true, "error": sent}
		"new_api":
			# A game that sets its networking up again: a fresh API for the scene tree.
			get_tree().set_multiplayer(ClassDB.instantiate("SyncedMultiplayerAPI"))
			return {"ok": true}
		"rpc":
			var probe := get_node("Probe")
			var err: int = probe.rpc_id(int(request.get("to", 0)), StringName(str(request.get("method", ""))), request.get("value"))
			return {"ok": true, "error": err}
		"spawn_player":
			# Game code as for SceneMultiplayer: the authority adds the player under the
			# spawner's spawn_path; PlayerSpawner and the player's synchronizer replicate it.
			var player: Node2D = load("res://game/player.tscn").instantiate()
			var peer := int(request.get("peer", 0))
			player.name = str(peer)
			player.position = Vector2(peer % 1000, 1)
			world.add_child(player)
			# As games do: the new player is told something at once, by an rpc that reaches
			# the others before its spawn does.
			if request.has("poke"):
				player.rpc("poke", request.get("poke"))
			return {"ok": true}
		"visibility":
			var synchronizer = world.get_node_or_null(NodePath(str(request.get("path", "")) + "/Sync"))
			if synchronizer == null:
				return _error("visibility: no synchronizer at %s/Sync" % request.get("path"))
			synchronizer.public_visibility = bool(request.get("public", true))
			if request.has("peer"):
				synchronizer.set_visibility_for(int(request.get("peer")), bool(request.get("visible", true)))
			return {"ok": true}
		"instance":
			var found = world.get_node_or_null(NodePath(str(request.get("path", ""))))
			return {"ok": true, "id": 0 if found == null else found.get_instance_id()}
		"set_local":
			var target = world.get_node_or_null(NodePath(str(request.get("path", ""))))
			if target == null:
				return _error("set_local: no node at %s" % request.get("path"))
			target.set(StringName(str(request.get("property", ""))), str_to_var(str(request.get("value", "null"))))
			return {"ok": true}
		"spawn_bullet":
			var data := {"id": int(request.get("id", 0)), "angle": float(request.get("angle", 0.0)),
					"from": str_to_var(str(request.get("from", "Vector2(0, 0)")))}
			var bullet: Node = $BulletSpawner.spawn(data)
			return {"ok": true, "name": "" if bullet == null else str(bullet.name)}
		"move":
			var node = world.get_node_or_null(NodePath(str(request.get("path", ""))))
			if node == null:
				return _error("move: no node at %s" % request.get("path"))
			node.position = str_to_var(str(request.get("position", "Vector2()")))
			return {"ok": true, "authority": node.is_multiplayer_authority()}
		"eventual":
			var written: bool = world.set_eventual(NodePath(str(request.get("path", ""))),
					StringName(str(request.get("property", ""))), str_to_var(str(request.get("value", "null"))))
			return {"ok": true, "written": written}
		"get":
			var target = world.get_node_or_null(NodePath(str(request.get("path", ""))))
			if target == null:
				return _error("get: no node at %s" % request.get("path"))
			return {"ok": true, "value": var_to_str(target.get(StringName(str(request.get("property", "")))))}
		"free":
			var gone = world.get_node_or_null(NodePath(str(request.get("path", ""))))
			if gone == null:
				return _error("free: no node at %s" % request.get("path"))
			gone.queue_free()
			return {"ok": true}
		"rpc_log":
			return {"ok": true, "calls": get_node("Probe").calls}
		"multiplayer":
			return {"ok": true, "unique_id": multiplayer.get_unique_id(),
					"peers": Array(multiplayer.get_peers()), "is_server": multiplayer.is_server(),
					"events": _mp_events}
		"quit":
			_quitting = true
			return {"ok": true}
	if typeof(cmd) == TYPE_STRING and cmd in BENCH_COMMANDS:
		if _bench == null:
			_bench = load("res://bench.gd").new(world, get_tree())
		return await _bench.handle(request)
	return _error("unknown cmd %s: expected \"status\", \"dump\", \"batch\" or \"quit\"" % JSON.stringify(cmd))


func _predict(request: Dictionary) -> Dictionary:
	var path := NodePath(str(request.get("path", "")))
	var property := StringName(str(request.get("property", "")))
	var value = str_to_var(str(request.get("value", "null")))
	var node: Node = world.get_node_or_null(path)
	if node == null:
		return _error("predict: no node at %s" % path)
	if not world.set_predicted(path, property):
		return _error("predict: set_predicted(%s, %s) was refused (see the log)" % [path, property])
	var events: Array = []
	var on_reconciled := func(_p: NodePath, _prop: StringName, predicted, committed, reason: String) -> void:
		events.append({"predicted": var_to_str(predicted), "committed": var_to_str(committed), "reason": reason})
	world.prediction_reconciled.connect(on_reconciled)
	# "values": a burst of predicted writes in one frame (one log entry, most likely).
	var values: Array = [value]
	if request.has("values"):
		values = (request.get("values") as Array).map(func(v): return str_to_var(str(v)))
	var reqs: Array = values.map(func(v): return world.set_synced(path, property, v))
	var shown := var_to_str(node.get(property))
	var written := true
	var error := ""
	for req in reqs:
		if not req.done:
			await req.completed
		written = written and req.ok
		if not req.ok:
			error = req.error
	world.prediction_reconciled.disconnect(on_reconciled)
	return {"ok": true, "written": written, "error": error, "shown_at_once": shown,
			"final": var_to_str(node.get(property)), "reconciled": events}


func _membership(request: Dictionary) -> Dictionary:
	var id = request.get("id")
	if typeof(id) != TYPE_FLOAT and typeof(id) != TYPE_INT:
		return _error("membership needs a numeric \"id\"")
	var req
	match request.get("action"):
		"add_learner":
			req = world.add_learner(int(id), str(request.get("address", "")))
		"promote":
			req = world.promote_to_voter(int(id))
		"remove":
			req = world.remove_server(int(id))
		_:
			return _error("membership \"action\" must be \"add_learner\", \"promote\" or \"remove\"")
	if not req.done:
		await req.completed
	if not req.ok:
		return {"ok": false, "error": req.error}
	var result: Dictionary = req.result
	return {"ok": true, "result": {"index": result["index"], "voters": Array(result["voters"]),
			"learners": Array(result["learners"])}}


func _batch(request: Dictionary) -> Dictionary:
	var ops = request.get("ops")
	if typeof(ops) != TYPE_ARRAY:
		return _error("a batch needs an \"ops\" array")
	# Check every op first so that a malformed batch issues nothing.
	var calls: Array[Dictionary] = []
	for i in ops.size():
		var parsed := _parse_op(ops[i])
		if parsed.has("error"):
			return _error("op %d: %s" % [i, parsed["error"]])
		calls.append(parsed)
	var started := Time.get_ticks_usec()
	var pending: Array = []
	for parsed_op in calls:
		pending.append(_issue(parsed_op))
	var deadline := Time.get_ticks_msec() + REQUEST_TIMEOUT_MSEC
	var results: Array[Dictionary] = []
	for i in pending.size():
		var req = pending[i]
		while not req.done and Time.get_ticks_msec() < deadline:
			await get_tree().process_frame
		if not req.done:
			results.append({"ok": false, "maybe_applied": true,
					"error": "request did not complete within %d ms" % REQUEST_TIMEOUT_MSEC})
			continue
		var result := {"ok": req.ok, "error": req.error, "maybe_applied": req.maybe_applied}
		if req.ok and calls[i]["op"] == "read":
			result["value"] = var_to_str(req.result)
		results.append(result)
	return {"ok": true, "results": results, "elapsed_usec": Time.get_ticks_usec() - started}


## Validates one op; returns the op with parsed values, or {"error": ...}.
func _parse_op(op) -> Dictionary:
	if typeof(op) != TYPE_DICTIONARY:
		return {"error": "an op must be a JSON object"}
	var kind = op.get("op")
	var fields: Array
	match kind:
		"spawn":
			fields = ["parent", "name", "scene"]
		"set":
			fields = ["path", "property", "value"]
		"despawn":
			fields = ["path"]
		"read":
			fields = ["path", "property"]
		"cas":
			fields = ["path", "property", "expected", "value"]
		_:
			return {"error": "unknown op %s: expected \"spawn\", \"set\", \"despawn\", \"read\" or \"cas\"" % JSON.stringify(kind)}
	var parsed := {"op": kind}
	for field in fields:
		if typeof(op.get(field)) != TYPE_STRING:
			return {"error": "%s needs a string \"%s\"" % [kind, field]}
		parsed[field] = op[field]
	if kind == "set" or kind == "cas":
		parsed["value"] = str_to_var(op["value"])
	if kind == "cas":
		parsed["expected"] = str_to_var(op["expected"])
	if kind == "spawn":
		var props = op.get("props", {})
		if typeof(props) != TYPE_DICTIONARY:
			return {"error": "spawn \"props\" must be an object of var_to_str strings"}
		var values := {}
		for key in props:
			if typeof(props[key]) != TYPE_STRING:
				return {"error": "spawn prop \"%s\" must be a var_to_str string" % key}
			values[StringName(key)] = str_to_var(props[key])
		parsed["props"] = values
	return parsed


func _issue(op: Dictionary):
	match op["op"]:
		"spawn":
			return world.spawn(NodePath(op["parent"]), StringName(op["name"]), op["scene"], op["props"])
		"set":
			return world.set_synced(NodePath(op["path"]), StringName(op["property"]), op["value"])
		"despawn":
			return world.despawn(NodePath(op["path"]))
		"cas":
			return world.compare_and_set(NodePath(op["path"]), StringName(op["property"]), op["expected"], op["value"])
		_:
			return world.read_synced(NodePath(op["path"]), StringName(op["property"]))
