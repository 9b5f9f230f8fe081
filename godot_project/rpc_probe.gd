extends Node
## A node with @rpc methods that records every call it receives (method, sender, value,
## which peer it ran on): the end-to-end tests drive rpcs through server.gd's control port
## and compare the records across processes.

var calls: Array = []


@rpc("any_peer", "call_remote", "reliable")
func ping(value) -> void:
	_record("ping", value)


@rpc("authority", "call_remote", "reliable")
func from_authority(value) -> void:
	_record("from_authority", value)


@rpc("any_peer", "call_local", "unreliable_ordered", 2)
func local_too(value) -> void:
	_record("local_too", value)


## Not an rpc: calls to it are refused.
func unlisted(value) -> void:
	_record("unlisted", value)


func _record(method: String, value) -> void:
	calls.append({"method": method, "sender": multiplayer.get_remote_sender_id(),
			"value": value, "on": multiplayer.get_unique_id()})
