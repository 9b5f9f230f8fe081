extends Node
## The replicated value of the baseline scene; says when it changes.

signal value_changed(v: int)

@export var value := 0:
	set(v):
		value = v
		value_changed.emit(v)
