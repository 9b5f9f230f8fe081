extends Node
## Autoload added by the synctree addon. When the project setting
## `synctree/multiplayer/replace_scene_multiplayer` is on, it installs SyncedMultiplayerAPI as
## the scene tree's MultiplayerAPI before any scene runs, so `rpc()`, `multiplayer.get_peers()`
## and the peer signals go through the synctree cluster with no change to game code.


func _enter_tree() -> void:
	if not ProjectSettings.get_setting("synctree/multiplayer/replace_scene_multiplayer", false):
		return
	if not ClassDB.class_exists("SyncedMultiplayerAPI"):
		push_error("synctree: SyncedMultiplayerAPI is not registered (is the extension built and loaded?); keeping SceneMultiplayer")
		return
	get_tree().set_multiplayer(ClassDB.instantiate("SyncedMultiplayerAPI"))
