extends Node2D
## A small spawnable scene for the demo and the tests: `health` and `color` are the
## properties a driver changes through `SyncedTree.set_synced`.

@export var health: int = 100
@export var color: Color = Color.WHITE
