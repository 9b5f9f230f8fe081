extends "res://tests/support/test_case.gd"
## Membership changes from GDScript: add a learner, remove it; bad changes are refused with an
## error naming the problem and change nothing. (Several real servers joining, promoted and
## removed: tests/membership.rs, over QUIC.)


func test_learners_come_and_go_and_bad_changes_are_refused() -> void:
	check_eq(tree.status()["voters"], PackedInt64Array([1]), "one voter to begin with")
	check_eq(tree.status()["learners"], PackedInt64Array(), "no learners to begin with")

	var req = await done(tree.add_learner(2, "127.0.0.1:7999"))
	if not check_ok(req, "add_learner(2)"):
		return
	check_eq(req.result["learners"], PackedInt64Array([2]), "the result names the new learner")
	check_eq(req.result["voters"], PackedInt64Array([1]), "a learner does not vote")
	check(int(req.result["index"]) > 0, "the change is a log entry")
	await frames(3)
	check_eq(tree.status()["learners"], PackedInt64Array([2]), "status() lists the learner")

	var cases := [
		["promote a server that is not a learner", tree.promote_to_voter(9), ["9", "not a learner"]],
		["remove a server that is not a member", tree.remove_server(9), ["9", "not a member"]],
		["remove the last voter", tree.remove_server(1), ["last voter"]],
		["add a voter as a learner", tree.add_learner(1, "127.0.0.1:7001"), ["already a voter"]],
		["an address that is not one", tree.add_learner(3, "nowhere"), ["nowhere", "invalid address"]],
		["a server id that is not one", tree.add_learner(0, "127.0.0.1:7000"), ["invalid server id 0"]],
		["a negative server id", tree.remove_server(-4), ["invalid server id -4"]],
	]
	for c in cases:
		await done(c[1])
	for c in cases:
		check_refused(c[1], c[2], c[0])
		check(not c[1].maybe_applied, "%s: certainly not applied" % c[0])
	check_eq(tree.status()["voters"], PackedInt64Array([1]), "voters unchanged by refusals")

	req = await done(tree.remove_server(2))
	if check_ok(req, "remove_server(2)"):
		check_eq(req.result["learners"], PackedInt64Array(), "the learner is gone")
