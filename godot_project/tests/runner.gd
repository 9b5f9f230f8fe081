extends SceneTree
## Godot-side test runner, in the manner of gdext's itest TestRunner.
##
##   godot --headless --path godot_project -s res://tests/runner.gd [-- --filter=TEXT]
##
## Discovers res://tests/test_*.gd (each extends res://tests/support/test_case.gd) and runs
## every `func test_*()` in declaration order; a test may `await`. Each test gets a fresh
## single-server SyncedTree (node_id 1, listen 127.0.0.1:0, no peers, in memory, autostart)
## under the root, already leader. A test fails on a failed check, a GDScript error or a Rust
## panic reported while it runs, or when it does not finish in time. Prints
## `N passed, M failed` alone on a line and exits 0 only if every test passed.

const TESTS_DIR := "res://tests"
const TEST_TIMEOUT_MSEC := 60_000
const LEADER_TIMEOUT_MSEC := 15_000
const FILTER_ARG := "--filter="


## Collects script errors and panics reported while a test runs (errors may be reported
## from any thread, hence the mutex).
class ErrorCatcher extends Logger:
	var _mutex := Mutex.new()
	var _errors: Array[String] = []

	func _log_error(function: String, file: String, line: int, code: String, rationale: String,
			_editor_notify: bool, error_type: int, _script_backtraces: Array[ScriptBacktrace]) -> void:
		var text := "%s %s" % [code, rationale]
		if error_type == ERROR_TYPE_SCRIPT or "panicked" in text or "[panic" in text:
			_push("%s (%s:%d in %s)" % [text.strip_edges(), file, line, function])

	func _log_message(message: String, error: bool) -> void:
		if error and ("panicked" in message or "[panic" in message):
			_push(message.strip_edges())

	func _push(text: String) -> void:
		_mutex.lock()
		_errors.append(text)
		_mutex.unlock()

	func take() -> Array[String]:
		_mutex.lock()
		var out := _errors.duplicate()
		_errors.clear()
		_mutex.unlock()
		return out


var _catcher := ErrorCatcher.new()
var _filter := ""
var _passed := 0
var _failed := 0
var _failures: Array[String] = []
var _current := ""
var _current_failed := false


func _initialize() -> void:
	OS.add_logger(_catcher)
	for arg in OS.get_cmdline_user_args():
		if arg.begins_with(FILTER_ARG):
			_filter = arg.substr(FILTER_ARG.length())
	_run_all()


## Called by test_case.gd's checks.
func record_failure(message: String) -> void:
	_current_failed = true
	var line := "  FAIL %s: %s" % [_current, message]
	_failures.append(line)
	print(line)


func _run_all() -> void:
	print("synctree Godot-side tests (Godot %s)" % Engine.get_version_info()["string"])
	if not ClassDB.class_exists("SyncedTree"):
		printerr("FATAL: class SyncedTree is not registered: the synctree extension is not loaded. "
			+ "Run `cargo xtask build` (it builds addons/synctree/bin/libsynctree_godot.so and writes "
			+ "godot_project/.godot/extension_list.cfg).")
		_finish(0, 1)
		return
	var files := _test_files()
	if files.is_empty():
		printerr("FATAL: no %s/test_*.gd found" % TESTS_DIR)
		_finish(0, 1)
		return
	for file in files:
		await _run_file(file)
	_finish(_passed, _failed)


func _test_files() -> Array[String]:
	var out: Array[String] = []
	for file in DirAccess.get_files_at(TESTS_DIR):
		if file.begins_with("test_") and file.ends_with(".gd"):
			out.append(TESTS_DIR.path_join(file))
	out.sort()
	return out


func _run_file(path: String) -> void:
	var script = load(path)
	if not (script is GDScript) or not script.can_instantiate():
		_current = path.get_file()
		_current_failed = false
		record_failure("cannot load the test script (parse error?)")
		_failed += 1
		return
	var names: Array[String] = []
	for method in script.get_script_method_list():
		var name: String = method["name"]
		if name.begins_with("test_") and not names.has(name):
			names.append(name)
	print("%s (%d tests)" % [path.get_file(), names.size()])
	for name in names:
		var full := "%s::%s" % [path.get_file().get_basename(), name]
		if _filter != "" and not (_filter in full):
			continue
		await _run_test(script, full, name)


func _run_test(script: GDScript, full_name: String, method: String) -> void:
	_current = full_name
	_current_failed = false
	_catcher.take()
	var started := Time.get_ticks_msec()
	var tree: Node = await _make_tree()
	if tree != null:
		var case = script.new()
		case.runner = self
		case.tree = tree
		var state := {"done": false}
		_call_test(case, method, state)
		var deadline := Time.get_ticks_msec() + TEST_TIMEOUT_MSEC
		while not state["done"] and Time.get_ticks_msec() < deadline:
			await process_frame
		if not state["done"]:
			record_failure("did not finish within %d ms (an await that never resumed?)" % TEST_TIMEOUT_MSEC)
		await _free_tree(tree)
	for error in _catcher.take():
		record_failure("error reported: " + error)
	var msec := Time.get_ticks_msec() - started
	if _current_failed:
		_failed += 1
		print("  FAILED %s (%d ms)" % [full_name, msec])
	else:
		_passed += 1
		print("  ok     %s (%d ms)" % [full_name, msec])


func _call_test(case: Object, method: String, state: Dictionary) -> void:
	await case.call(method)
	state["done"] = true


## A fresh single-server SyncedTree under the root, started and leader; null on failure.
func _make_tree() -> Node:
	var tree: Node = ClassDB.instantiate("SyncedTree")
	tree.name = "SyncedTree"
	tree.set("node_id", 1)
	tree.set("listen_address", "127.0.0.1:0")
	tree.set("peers", "")
	tree.set("in_memory", true)
	tree.set("autostart", true)
	root.add_child(tree)
	var deadline := Time.get_ticks_msec() + LEADER_TIMEOUT_MSEC
	while Time.get_ticks_msec() < deadline:
		if tree.is_running() and tree.is_leader():
			return tree
		await process_frame
	record_failure("fixture: the single-server SyncedTree did not become leader within %d ms (running=%s, status=%s)"
		% [LEADER_TIMEOUT_MSEC, tree.is_running(), tree.status()])
	await _free_tree(tree)
	return null


func _free_tree(tree: Node) -> void:
	if not is_instance_valid(tree):
		return
	if tree.is_running():
		tree.stop()
	tree.queue_free()
	await process_frame
	await process_frame


func _finish(passed: int, failed: int) -> void:
	if not _failures.is_empty():
		print("")
		print("Failures:")
		for line in _failures:
			print(line)
	print("")
	print("%d passed, %d failed" % [passed, failed])
	OS.remove_logger(_catcher)
	quit(0 if failed == 0 else 1)
