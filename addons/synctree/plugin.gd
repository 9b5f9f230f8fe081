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
		# Threads of a server's network and consensus runtime (beside Godot's main thread).
		# 1 was fastest where servers share few cores.
		"name": "synctree/runtime/worker_threads",
		"type": TYPE_INT,
		"default": 1,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "1,64,1",
	},
	{
		# Servers: the UDP address game clients connect to (empty: no client port).
		"name": "synctree/clients/listen",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_PLACEHOLDER_TEXT,
		"hint_string": "0.0.0.0:7101",
	},
	{
		# Servers: a file with one client token per line ('#' starts a comment). Keep it
		# out of the exported game: clients must not ship the other players' tokens.
		"name": "synctree/clients/tokens_file",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_GLOBAL_FILE,
		"hint_string": "",
	},
	{
		# Servers: the scenes game clients may spawn (servers may spawn any).
		"name": "synctree/clients/spawnable",
		"type": TYPE_PACKED_STRING_ARRAY,
		"default": PackedStringArray(),
		"hint": PROPERTY_HINT_TYPE_STRING,
		"hint_string": "%d/%d:*.tscn,*.scn" % [TYPE_STRING, PROPERTY_HINT_FILE],
	},
	{
		# Servers: requests one client may make per second, and in one burst.
		"name": "synctree/clients/rate_per_second",
		"type": TYPE_INT,
		"default": 200,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "1,100000,1,or_greater",
	},
	{
		"name": "synctree/clients/burst",
		"type": TYPE_INT,
		"default": 400,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "1,100000,1,or_greater",
	},
	{
		# Game clients: the servers' client ports. Set, a SyncedTree is a client.
		"name": "synctree/client/connect",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_PLACEHOLDER_TEXT,
		"hint_string": "1@10.0.0.1:7101,2@10.0.0.2:7101",
	},
	{
		# Game clients: the cluster CA certificate (ca.pem from `synctree certs`).
		"name": "synctree/client/ca_file",
		"type": TYPE_STRING,
		"default": "",
		"hint": PROPERTY_HINT_FILE,
		"hint_string": "*.pem",
	},
	{
		# Install SyncedMultiplayerAPI project-wide (through the addon's autoload).
		"name": "synctree/multiplayer/replace_scene_multiplayer",
		"type": TYPE_BOOL,
		"default": false,
		"hint": PROPERTY_HINT_NONE,
		"hint_string": "",
	},
	{
		"name": "synctree/apply/max_effects_per_frame",
		"type": TYPE_INT,
		"default": 4096,
		"hint": PROPERTY_HINT_RANGE,
		"hint_string": "1,1000000,1,or_greater",
	},
]


const AUTOLOAD_NAME := "SyncedMultiplayer"
const AUTOLOAD_PATH := "res://addons/synctree/multiplayer_autoload.gd"


func _enable_plugin() -> void:
	_register_settings()
	# Installs SyncedMultiplayerAPI when synctree/multiplayer/replace_scene_multiplayer is on.
	add_autoload_singleton(AUTOLOAD_NAME, AUTOLOAD_PATH)


func _enter_tree() -> void:
	# Property hints are not stored in project.godot: add them again each editor session.
	_register_settings()


func _disable_plugin() -> void:
	# Settings a user changed stay in project.godot (settings still at their default are
	# not written there anyway); the autoload goes with the addon.
	remove_autoload_singleton(AUTOLOAD_NAME)


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
