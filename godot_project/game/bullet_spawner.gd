extends MultiplayerSpawner
## A custom spawner as a Godot game writes one for SceneMultiplayer: `spawn(data)` on the
## authority calls `spawn_function` with the data, and every other peer calls it with the same
## data to make its copy. Nothing but the data says where a bullet starts (no synchronizer), so
## the end-to-end tests see the data arrive. The function also asks the SyncedTree something,
## as game code may: on a replica it runs while the SyncedTree applies the spawn.


func _ready() -> void:
	spawn_function = _make_bullet


func _make_bullet(data: Dictionary) -> Node:
	var bullet := Node2D.new()
	bullet.name = "Bullet%d" % int(data["id"])
	bullet.position = data["from"]
	bullet.rotation = float(data.get("angle", 0.0))
	var tree := _synced_tree()
	if tree:
		bullet.set_meta("applied_index", tree.applied_index())
	return bullet


func _synced_tree() -> Node:
	var n := get_node_or_null(spawn_path)
	return n if n and n.is_class("SyncedTree") else null
