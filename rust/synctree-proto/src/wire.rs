//! How committed effects travel to game clients: property names and scenes are sent once.
//!
//! Every client gets every committed change. Most name one of a few properties (`position`,
//! `health`) and every spawn one of a few scenes, so a server's feed numbers each such name
//! the first time it sends it (`[id, "health"]`) and sends the number after (one byte below
//! 128). The numbering belongs to the server's feed and is the same for all its clients: a
//! client that subscribes is first sent every name given so far ([`ServerMessage::Names`]),
//! then entries, which may define more.
//!
//! ```text
//!   EntryEffects ─► NameEncoder::pack ─► WireEntry ─► (client) NameDecoder::unpack ─► EntryEffects
//! ```
//!
//! [`ServerMessage::Names`]: crate::ServerMessage::Names

use std::collections::HashSet;

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::{Effect, EntryEffects, NodeKey, Value};

/// Names a feed numbers, at most; later ones are sent in full each time.
pub const MAX_NAMES: usize = 4096;

/// A property or scene name in the feed: a number given before, a number given now, or the
/// name itself (past [`MAX_NAMES`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireName {
    Id(u32),
    Define(u32, CompactString),
    Inline(CompactString),
}

/// An [`Effect`] as it travels to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireEffect {
    #[serde(rename = "S")]
    Spawned {
        node: NodeKey,
        parent: NodeKey,
        name: String,
        scene: WireName,
        props: Vec<(WireName, Value)>,
        owner: u64,
    },
    #[serde(rename = "D")]
    Despawned { node: NodeKey },
    #[serde(rename = "P")]
    PropertySet {
        node: NodeKey,
        property: WireName,
        value: Value,
    },
    /// Names defined by effects this client is not sent (they concern nodes hidden from
    /// it): later effects it is sent may use them.
    #[serde(rename = "N")]
    Names(Vec<(u32, CompactString)>),
}

/// The effects of one committed log entry, as they travel to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEntry {
    pub index: u64,
    pub effects: Vec<WireEffect>,
}

/// A feed's numbering of names (the sending side).
#[derive(Debug, Default)]
pub struct NameEncoder {
    ids: FxHashMap<CompactString, u32>,
    names: Vec<CompactString>,
}

impl NameEncoder {
    fn name(&mut self, name: &str) -> WireName {
        if let Some(id) = self.ids.get(name) {
            return WireName::Id(*id);
        }
        if self.names.len() >= MAX_NAMES {
            return WireName::Inline(name.into());
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        WireName::Define(id, name.into())
    }

    /// `entry` as it travels, numbering the names it is the first to use.
    pub fn pack(&mut self, entry: EntryEffects) -> WireEntry {
        let effects = entry
            .effects
            .into_iter()
            .map(|e| match e {
                Effect::Spawned {
                    node,
                    parent,
                    name,
                    scene,
                    props,
                    owner,
                } => WireEffect::Spawned {
                    node,
                    parent,
                    name,
                    scene: self.name(&scene),
                    props: props.into_iter().map(|(p, v)| (self.name(&p), v)).collect(),
                    owner,
                },
                Effect::Despawned { node } => WireEffect::Despawned { node },
                Effect::PropertySet {
                    node,
                    property,
                    value,
                } => WireEffect::PropertySet {
                    node,
                    property: self.name(&property),
                    value,
                },
            })
            .collect();
        WireEntry {
            index: entry.index,
            effects,
        }
    }

    /// Every name numbered so far, by number: what a new subscriber is sent first.
    pub fn names(&self) -> Vec<CompactString> {
        self.names.clone()
    }
}

/// A client's copy of its server's numbering (the receiving side).
#[derive(Debug, Default)]
pub struct NameDecoder {
    names: FxHashMap<u32, CompactString>,
}

impl NameDecoder {
    /// Takes the names a server sends a new subscriber (numbered from 0).
    pub fn define_all(&mut self, names: Vec<CompactString>) -> Result<(), String> {
        if names.len() > MAX_NAMES {
            return Err(format!(
                "the server numbered {} names, more than {MAX_NAMES}",
                names.len()
            ));
        }
        self.names = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (i as u32, n))
            .collect();
        Ok(())
    }

    fn define(&mut self, id: u32, name: CompactString) -> Result<(), String> {
        if id as usize >= MAX_NAMES {
            return Err(format!("the server numbered a name {id}, past {MAX_NAMES}"));
        }
        self.names.insert(id, name);
        Ok(())
    }

    fn name(&mut self, name: WireName) -> Result<CompactString, String> {
        match name {
            WireName::Id(id) => self
                .names
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("the server used name {id} before giving it")),
            WireName::Define(id, name) => {
                self.define(id, name.clone())?;
                Ok(name)
            }
            WireName::Inline(name) => Ok(name),
        }
    }

    /// `entry` with its names, learning the ones it defines.
    pub fn unpack(&mut self, entry: WireEntry) -> Result<EntryEffects, String> {
        let mut effects = Vec::with_capacity(entry.effects.len());
        for e in entry.effects {
            effects.push(match e {
                WireEffect::Spawned {
                    node,
                    parent,
                    name,
                    scene,
                    props,
                    owner,
                } => Effect::Spawned {
                    node,
                    parent,
                    name,
                    scene: self.name(scene)?.into(),
                    props: props
                        .into_iter()
                        .map(|(p, v)| Ok((self.name(p)?.into(), v)))
                        .collect::<Result<_, String>>()?,
                    owner,
                },
                WireEffect::Despawned { node } => Effect::Despawned { node },
                WireEffect::PropertySet {
                    node,
                    property,
                    value,
                } => Effect::PropertySet {
                    node,
                    property: self.name(property)?,
                    value,
                },
                WireEffect::Names(names) => {
                    for (id, name) in names {
                        self.define(id, name)?;
                    }
                    continue;
                }
            });
        }
        Ok(EntryEffects {
            index: entry.index,
            effects,
        })
    }
}

/// Drops from `effects` what concerns nodes in `hidden` (a client's hidden subtrees), except
/// the names it defines (given first, in a [`WireEffect::Names`]), and keeps `hidden` up to date: a node spawned under a hidden one is
/// hidden too, a despawned one is forgotten.
pub fn filter_hidden_wire(hidden: &mut HashSet<NodeKey>, effects: &mut Vec<WireEffect>) {
    let mut defined = Vec::new();
    let mut define = |n: &WireName| {
        if let WireName::Define(id, name) = n {
            defined.push((*id, name.clone()));
        }
    };
    effects.retain(|e| {
        let keep = match e {
            WireEffect::Spawned { node, parent, .. } => {
                if hidden.contains(parent) {
                    hidden.insert(*node);
                    false
                } else {
                    true
                }
            }
            WireEffect::PropertySet { node, .. } => !hidden.contains(node),
            WireEffect::Despawned { node } => !hidden.remove(node),
            WireEffect::Names(_) => true,
        };
        if !keep {
            match e {
                WireEffect::Spawned { scene, props, .. } => {
                    define(scene);
                    props.iter().for_each(|(p, _)| define(p));
                }
                WireEffect::PropertySet { property, .. } => define(property),
                _ => {}
            }
        }
        keep
    });
    // First: an effect kept in the same entry may use a name a dropped one defined.
    if !defined.is_empty() {
        effects.insert(0, WireEffect::Names(defined));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(node: NodeKey, property: &str, v: i64) -> Effect {
        Effect::PropertySet {
            node,
            property: property.into(),
            value: Value::Int(v),
        }
    }

    fn spawn(node: NodeKey, parent: NodeKey) -> Effect {
        Effect::Spawned {
            node,
            parent,
            name: format!("N{node}"),
            scene: "res://player.tscn".into(),
            props: vec![("health".into(), Value::Int(1))],
            owner: 1,
        }
    }

    fn entry(index: u64, effects: Vec<Effect>) -> EntryEffects {
        EntryEffects { index, effects }
    }

    #[test]
    fn names_travel_once_and_come_back() {
        let mut enc = NameEncoder::default();
        let entries = [
            entry(1, vec![spawn(1, 0), set(1, "health", 5)]),
            entry(2, vec![set(1, "health", 6), set(1, "position", 7)]),
            entry(3, vec![spawn(2, 0)]),
        ];
        let packed: Vec<WireEntry> = entries.iter().map(|e| enc.pack(e.clone())).collect();
        assert!(matches!(
            &packed[1].effects[0],
            WireEffect::PropertySet {
                property: WireName::Id(1),
                ..
            }
        ));
        let first = crate::encode(&packed[0]).unwrap().len();
        let later = crate::encode(&packed[2]).unwrap().len();
        assert!(later + 20 < first, "{later} vs {first}");
        let mut dec = NameDecoder::default();
        let back: Vec<EntryEffects> = packed
            .iter()
            .map(|p| dec.unpack(p.clone()).unwrap())
            .collect();
        assert_eq!(back, entries);

        // A client that subscribes after entry 2 is given the names so far, then reads on.
        let mut late = NameDecoder::default();
        late.define_all(enc.names()).unwrap();
        assert_eq!(late.unpack(packed[2].clone()).unwrap(), entries[2]);
        // Without them, a number it never got is an error that names it.
        let err = NameDecoder::default()
            .unpack(packed[1].clone())
            .unwrap_err();
        assert!(err.contains("name 1 before giving it"), "{err}");
    }

    #[test]
    fn hidden_effects_keep_the_names_they_define() {
        let mut enc = NameEncoder::default();
        let first = enc.pack(entry(1, vec![spawn(1, 0), spawn(2, 1), set(2, "score", 1)]));
        let second = enc.pack(entry(2, vec![set(3, "score", 2)]));
        let mut hidden = HashSet::from([1]);
        let mut effects = first.effects.clone();
        filter_hidden_wire(&mut hidden, &mut effects);
        assert_eq!(hidden, HashSet::from([1, 2]));
        assert!(
            matches!(effects.as_slice(), [WireEffect::Names(n), WireEffect::Spawned { node: 1, .. }] if n.len() == 1)
        );
        let mut dec = NameDecoder::default();
        let got = dec.unpack(WireEntry { index: 1, effects }).unwrap();
        assert_eq!(got.effects, vec![spawn(1, 0)]);
        assert_eq!(
            dec.unpack(second).unwrap().effects,
            vec![set(3, "score", 2)]
        );

        // A kept effect of the same entry uses the name a dropped one defined.
        let mut enc = NameEncoder::default();
        let mut effects = enc
            .pack(entry(1, vec![set(1, "ammo", 1), set(3, "ammo", 2)]))
            .effects;
        filter_hidden_wire(&mut HashSet::from([1]), &mut effects);
        let got = NameDecoder::default()
            .unpack(WireEntry { index: 1, effects })
            .unwrap();
        assert_eq!(got.effects, vec![set(3, "ammo", 2)]);
    }

    #[test]
    fn past_the_limit_names_go_in_full() {
        let mut enc = NameEncoder::default();
        for i in 0..MAX_NAMES {
            enc.name(&format!("p{i}"));
        }
        assert_eq!(enc.name("late"), WireName::Inline("late".into()));
        assert_eq!(enc.name("p7"), WireName::Id(7));
        let mut dec = NameDecoder::default();
        assert!(dec.define(MAX_NAMES as u32, "x".into()).is_err());
        assert!(dec.define_all(vec!["x".into(); MAX_NAMES + 1]).is_err());
    }

    #[test]
    fn wire_names_decode_by_shape() {
        for n in [
            WireName::Id(3),
            WireName::Id(70_000),
            WireName::Define(2, "health".into()),
            WireName::Inline("position".into()),
        ] {
            let bytes = crate::encode(&n).unwrap();
            assert_eq!(crate::decode::<WireName>(&bytes, 64).unwrap(), n);
        }
        assert_eq!(crate::encode(&WireName::Id(3)).unwrap().len(), 1);
    }
}
