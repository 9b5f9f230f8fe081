//! `SyncedMultiplayerAPI`: synctree's replacement for SceneMultiplayer.
//!
//! Registered now with correct server identities; client connections, `rpc()` routing and
//! the spawner/synchronizer mapping arrive with the clients issue.

use godot::classes::{IMultiplayerApiExtension, MultiplayerApiExtension, MultiplayerPeer};
use godot::global::Error;
use godot::prelude::*;

/// A MultiplayerAPI for games running on a synctree cluster. On a dedicated server its
/// unique id is 1, as with SceneMultiplayer; peers (clients) are not connected yet in this
/// version, so `get_peer_ids()` is empty and `rpc()` reports `ERR_UNAVAILABLE`.
#[derive(GodotClass)]
#[class(tool, base=MultiplayerApiExtension)]
pub struct SyncedMultiplayerAPI {
    base: Base<MultiplayerApiExtension>,
    peer: Option<Gd<MultiplayerPeer>>,
}

#[godot_api]
impl IMultiplayerApiExtension for SyncedMultiplayerAPI {
    fn init(base: Base<MultiplayerApiExtension>) -> Self {
        SyncedMultiplayerAPI { base, peer: None }
    }

    fn poll(&mut self) -> Error {
        if let Some(peer) = self.peer.as_mut() {
            peer.poll();
        }
        Error::OK
    }

    fn set_multiplayer_peer(&mut self, peer: Option<Gd<MultiplayerPeer>>) {
        self.peer = peer;
    }

    fn get_multiplayer_peer(&mut self) -> Option<Gd<MultiplayerPeer>> {
        self.peer.clone()
    }

    fn get_unique_id(&self) -> i32 {
        match &self.peer {
            Some(peer) => peer.get_unique_id(),
            // A dedicated server without a peer is the authority, like SceneMultiplayer's 1.
            None => 1,
        }
    }

    fn get_peer_ids(&self) -> PackedInt32Array {
        PackedInt32Array::new()
    }

    fn rpc(
        &mut self,
        _peer: i32,
        object: Option<Gd<Object>>,
        method: StringName,
        _args: VarArray,
    ) -> Error {
        let target = object
            .map(|o| o.get_class().to_string())
            .unwrap_or_else(|| "<null>".into());
        godot_error!(
            "SyncedMultiplayerAPI: rpc '{method}' on {target} is not available yet: client connections are not implemented in this version"
        );
        Error::ERR_UNAVAILABLE
    }

    fn get_remote_sender_id(&self) -> i32 {
        0
    }

    fn object_configuration_add(
        &mut self,
        object: Option<Gd<Object>>,
        _configuration: Variant,
    ) -> Error {
        // Godot first calls this with a null object (the root's configuration); accept it.
        let _ = object;
        Error::OK
    }

    fn object_configuration_remove(
        &mut self,
        object: Option<Gd<Object>>,
        _configuration: Variant,
    ) -> Error {
        let _ = object;
        Error::OK
    }
}
