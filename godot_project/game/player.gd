extends Node2D
## A player as a Godot game writes one for SceneMultiplayer: named after its peer, which is its
## multiplayer authority; a MultiplayerSynchronizer (in player.tscn) replicates position and
## health, and its Body child's modulate (a child-node property path). The end-to-end tests run it unchanged on SyncedMultiplayerAPI.

@export var health := 100
## What `poke` rpcs brought, in order (the tests read it).
var pokes: Array = []


func _enter_tree() -> void:
	if str(name).is_valid_int():
		set_multiplayer_authority(str(name).to_int())


@rpc("any_peer", "call_remote", "reliable")
func poke(value) -> void:
	pokes.append(value)
