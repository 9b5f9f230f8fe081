extends RefCounted
## Base of the Godot-side test scripts (res://tests/test_*.gd extend this file by path).
##
## The runner sets `tree` (a fresh single-server SyncedTree, started and leader) and `runner`
## before calling one `test_*` method on a fresh instance. Checks record a failure with the
## file and test name and let the test go on; they return whether they held.

## The SyncedTree under test (untyped so that the tests parse without the extension).
var tree
## The runner (res://tests/runner.gd), which records failures.
var runner


func check(condition: bool, message: String) -> bool:
	if not condition:
		runner.record_failure(message)
	return condition


## Equal values of the same Variant type, compared deeply (element types included).
func check_eq(actual, expected, message: String) -> bool:
	if same(actual, expected):
		return true
	runner.record_failure("%s: expected %s, got %s" % [message, show(expected), show(actual)])
	return false


func check_ok(req, message: String) -> bool:
	if req == null:
		runner.record_failure("%s: no SyncRequest returned" % message)
		return false
	if not req.done:
		runner.record_failure("%s: request not done" % message)
		return false
	if not req.ok:
		runner.record_failure("%s: failed with error '%s'" % [message, req.error])
		return false
	return true


## The request failed, with an error that mentions every one of `words`.
func check_refused(req, words: Array, message: String) -> bool:
	if req == null:
		runner.record_failure("%s: no SyncRequest returned" % message)
		return false
	if not req.done:
		runner.record_failure("%s: request not done" % message)
		return false
	if req.ok:
		runner.record_failure("%s: expected a refusal, but it succeeded" % message)
		return false
	var error: String = req.error
	var held := check(not error.is_empty(), "%s: refused without an error message" % message)
	for word in words:
		held = check(str(word) in error, "%s: error '%s' does not mention '%s'" % [message, error, word]) and held
	return held


## Records the arguments of `req.completed` into `into` (an Array, appended as [ok, result]).
func record_completion(req, into: Array):
	req.completed.connect(func(ok, result) -> void: into.append([ok, result]))
	return req


## Waits until `req` completes (safe to call when it already has) and returns it.
func done(req):
	if req != null and not req.done:
		await req.completed
	return req


## Waits until every request completes.
func all_done(reqs: Array) -> void:
	for req in reqs:
		await done(req)


func frames(count: int) -> void:
	for i in count:
		await tree.get_tree().process_frame


static func same(a, b) -> bool:
	if typeof(a) != typeof(b):
		return false
	match typeof(a):
		TYPE_ARRAY:
			if a.size() != b.size():
				return false
			for i in a.size():
				if not same(a[i], b[i]):
					return false
			return true
		TYPE_DICTIONARY:
			var ka: Array = a.keys()
			var kb: Array = b.keys()
			if not same(ka, kb):
				return false
			for k in ka:
				if not same(a[k], b[k]):
					return false
			return true
		TYPE_OBJECT:
			return is_same(a, b)
		_:
			return a == b


static func show(value) -> String:
	return "%s %s" % [type_string(typeof(value)), var_to_str(value).replace("\n", "\\n")]
