extends Node
## Godot's built-in replication, measured for comparison (`cargo xtask bench`): one ENet
## server and two clients with SceneMultiplayer, a node "A" whose `value` a
## MultiplayerSynchronizer replicates (on change, every frame), owned by the first client.
## The server makes the client with the lower id the sender (A's authority); it sets value
## 1..N; the other client records when each arrives. Times are wall-clock
## microseconds, comparable across the processes of one machine; each process writes its
## records as JSON and quits.
##
## With --baseline-spawn=N instead: once both clients are in, the server adds N instances of
## res://demo_world.tscn under "Spawned" in one frame (its MultiplayerSpawner replicates them)
## and records when; each client records when it holds all N.
##
## With --baseline-mode=always: A's synchronizer replicates `value` in REPLICATION_MODE_ALWAYS
## (unreliable, its current state every replication interval, here the change interval), the
## mode games use for positions: what synctree's eventual properties stand for.
##
## User args: --baseline-role=server|client --baseline-port=P --baseline-count=N
##            [--baseline-connect-port=C] (a client connects to C instead of P: a relay)
##            --baseline-interval-ms=I --baseline-out=FILE [--baseline-spawn=N]
##            [--baseline-mode=always]

var role := ""
var port := 0
var connect_port := 0
var count := 100
var interval_usec := 10_000
var out_path := ""
var sent := PackedInt64Array()
var received := {}  # value -> usec
var sender_id := 0
var next_value := 1
var next_at := 0
var started := 0
var done := false
var spawn_count := 0
var mode := "on_change"
var spawn_start := 0
var spawn_done := 0

@onready var a: Node = $A


static func now_usec() -> int:
	return int(Time.get_unix_time_from_system() * 1_000_000.0)


func _ready() -> void:
	for arg in OS.get_cmdline_user_args():
		var kv := arg.trim_prefix("--baseline-").split("=", true, 1)
		if kv.size() != 2:
			continue
		match kv[0]:
			"role": role = kv[1]
			"port": port = int(kv[1])
			"connect-port": connect_port = int(kv[1])
			"count": count = int(kv[1])
			"interval-ms": interval_usec = int(kv[1]) * 1000
			"out": out_path = kv[1]
			"spawn": spawn_count = int(kv[1])
			"mode": mode = kv[1]
	if mode == "always":
		var sync: MultiplayerSynchronizer = $A/Sync
		sync.replication_config.property_set_replication_mode(NodePath(".:value"),
				SceneReplicationConfig.REPLICATION_MODE_ALWAYS)
		sync.replication_interval = interval_usec / 1_000_000.0
	started = Time.get_ticks_msec()
	var peer := ENetMultiplayerPeer.new()
	var err := peer.create_server(port, 4) if role == "server" else peer.create_client("127.0.0.1", connect_port if connect_port > 0 else port)
	if err != OK:
		printerr("BASELINE FAILED: cannot open ENet (%s)" % error_string(err))
		get_tree().quit(1)
		return
	multiplayer.multiplayer_peer = peer
	if role == "server":
		multiplayer.peer_connected.connect(_on_peer_connected)
	a.value_changed.connect(_on_value)


func _on_peer_connected(_id: int) -> void:
	var peers := multiplayer.get_peers()
	if peers.size() == 2:
		peers.sort()
		begin.rpc(peers[0])


@rpc("authority", "call_local", "reliable")
func begin(sender: int) -> void:
	sender_id = sender
	a.set_multiplayer_authority(sender)
	next_at = now_usec() + 500_000


func _is_sender() -> bool:
	return sender_id != 0 and sender_id == multiplayer.get_unique_id()


func _on_value(v: int) -> void:
	if role == "client" and not _is_sender() and not received.has(v):
		received[v] = now_usec()


func _process(_delta: float) -> void:
	if done:
		return
	if Time.get_ticks_msec() - started > 60_000:
		_finish()
		return
	if spawn_count > 0:
		_process_spawn()
		return
	if role == "client" and _is_sender():
		if next_value <= count and now_usec() >= next_at:
			sent.append(now_usec())
			a.value = next_value
			next_value += 1
			next_at = now_usec() + interval_usec
		elif next_value > count and now_usec() >= next_at + 1_000_000:
			_finish()
	elif role == "client" and received.has(count):
		_finish()
	elif role == "server" and sender_id != 0 and multiplayer.get_peers().is_empty():
		_finish()


func _process_spawn() -> void:
	var holder: Node = $Spawned
	if role == "server" and sender_id != 0 and spawn_start == 0 and now_usec() >= next_at:
		var scene: PackedScene = load("res://demo_world.tscn")
		spawn_start = now_usec()
		for i in spawn_count:
			var n := scene.instantiate()
			n.name = "S%d" % i
			holder.add_child(n)
	elif role == "server" and spawn_start != 0 and multiplayer.get_peers().is_empty():
		_finish()
	elif role == "client" and spawn_done == 0 and holder.get_child_count() >= spawn_count:
		spawn_done = now_usec()
	elif role == "client" and spawn_done != 0 and now_usec() > spawn_done + 300_000:
		_finish()


func _finish() -> void:
	done = true
	if out_path != "":
		var f := FileAccess.open(out_path, FileAccess.WRITE)
		var r := {}
		for k in received:
			r[str(k)] = received[k]
		f.store_string(JSON.stringify({"role": role, "sender": _is_sender(), "sent": Array(sent), "received": r,
				"spawn_start": spawn_start, "spawn_done": spawn_done}))
		f.close()
	get_tree().quit(0)
