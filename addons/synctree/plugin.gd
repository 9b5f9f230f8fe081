@tool
extends EditorPlugin
## Registers synctree's project settings (Project > Project Settings > synctree).
##
## Settings are read by every SyncedTree when it starts; its exported properties win over
## them when set, and the command-line user args (`-- --synctree-id=...`) win over both.
## Disabling the addon removes nothing: values a user set stay in project.godot.

const SETTINGS := [
	{
		"name": "synctree/network/node_id",
		"type": TYPE_INT,
		"default": 0,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "0,65535,1,or_greater",
	},
	{
		"name": "synctree/network/listen_address",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_PLACEHOLDER_TEXT,
		"hint_string": "127.0.0.1:7001",
	},
	{
		"name": "synctree/network/peers",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_PLACEHOLDER_TEXT,
		"hint_string": "2@127.0.0.1:7002,3@127.0.0.1:7003",
	},
	{
		"name": "synctree/storage/data_dir",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_PLACEHOLDER_TEXT,
		"hint_string": "user://synctree/<id>",
	},
	{
		"name": "synctree/storage/fsync",
		"type": TYPE_BOOL,
		"default": true,
		"hint": PROPERTY_HINT_NONE,
		"hint_string": "",
	},
	{
		"name": "synctree/security/certs_dir",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_PLACEHOLDER_TEXT,
		"hint_string": "folder with ca.pem and this server's certificate",
	},
	{
		"name": "synctree/security/dev_certs_dir",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_PLACEHOLDER_TEXT,
		"hint_string": "dev only: auto-generated cluster CA and certificates",
	},
	{
		"name": "synctree/raft/heartbeat_ms",
		"type": TYPE_INT,
		"default": 50,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "1,10000,1,or_greater,suffix:ms",
	},
	{
		"name": "synctree/raft/election_timeout_min_ms",
		"type": TYPE_INT,
		"default": 150,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "2,60000,1,or_greater,suffix:ms",
	},
	{
		"name": "synctree/raft/election_timeout_max_ms",
		"type": TYPE_INT,
		"default": 300,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "3,60000,1,or_greater,suffix:ms",
	},
	{
		"name": "synctree/raft/snapshot_every",
		"type": TYPE_INT,
		"default": 10000,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "100,100000000,1,or_greater",
	},
	{
		# Batches the leader keeps in consensus at once. More helps when every server has
		# spare cores; on a machine that runs several servers on few cores, 1 is faster.
		"name": "synctree/raft/pipeline",
		"type": TYPE_INT,
		"default": 1,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "1,64,1",
	},
	{
		"name": "synctree/apply/max_effects_per_frame",
		"type": TYPE_INT,
		"default": 4096,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "1,1000000,1,or_greater",
	},
]


func _enable_plugin() -> void:
	_register_settings()


func _enter_tree() -> void:
	# Property hints are not stored in project.godot: add them again each editor session.
	_register_settings()


func _disable_plugin() -> void:
	# Deliberately nothing: settings a user changed stay in project.godot, and settings
	# still at their default are not written there anyway.
	pass


func _register_settings() -> void:
	for setting in SETTINGS:
		var name: String = setting["name"]
		if not ProjectSettings.has_setting(name):
			ProjectSettings.set_setting(name, setting["default"])
		ProjectSettings.set_initial_value(name, setting["default"])
		ProjectSettings.add_property_info({
			"name": name,
			"type": setting["type"],
			"hint": setting["hint"],
			"hint_string": setting["hint_string"],
		})
		ProjectSettings.set_as_basic(name, true)
