//! [`ServerFrame`]'s `Deserialize`, written by hand for speed; the wire form is the derived
//! `Serialize`'s (an object tagged by `"type"`), and what it accepts is what serde's
//! internally tagged derive accepts.
//!
//! serde's derive for an internally tagged enum first buffers the whole object (every string
//! copied, every nested value boxed) because the tag may come anywhere; for a pull reply that
//! is every message twice. Our own encoder always writes `"type"` first, so this reads the
//! first key, and when it is the tag, deserializes the variant's fields straight from the
//! rest of the object. A tag elsewhere (another encoder) takes the slow road: the object is
//! collected as a JSON value and read from there.

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use tidemark_engine::{Push, RequestId, Response, Timestamp};

use super::ServerFrame;

/// The frame types, as the derive names them.
const VARIANTS: &[&str] = &["welcome", "response", "push", "error"];

/// The fields of each frame type, without the tag; unknown fields are refused, as the
/// enum's `deny_unknown_fields` does.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Welcome {
    version: u32,
    server_time: Timestamp,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseFields {
    id: RequestId,
    response: Response,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PushFields {
    push: Push,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorFields {
    code: String,
    message: String,
    fatal: bool,
}

/// The frame type named by a tag.
#[derive(Clone, Copy)]
enum Kind {
    Welcome,
    Response,
    Push,
    Error,
}

impl Kind {
    fn of<E: de::Error>(tag: &str) -> Result<Self, E> {
        match tag {
            "welcome" => Ok(Kind::Welcome),
            "response" => Ok(Kind::Response),
            "push" => Ok(Kind::Push),
            "error" => Ok(Kind::Error),
            other => Err(E::unknown_variant(other, VARIANTS)),
        }
    }

    /// The frame of this type whose fields `fields` yields.
    fn read<'de, D: Deserializer<'de>>(self, fields: D) -> Result<ServerFrame, D::Error> {
        Ok(match self {
            Kind::Welcome => {
                let Welcome {
                    version,
                    server_time,
                } = Welcome::deserialize(fields)?;
                ServerFrame::Welcome {
                    version,
                    server_time,
                }
            }
            Kind::Response => {
                let ResponseFields { id, response } = ResponseFields::deserialize(fields)?;
                ServerFrame::Response { id, response }
            }
            Kind::Push => ServerFrame::Push {
                push: PushFields::deserialize(fields)?.push,
            },
            Kind::Error => {
                let ErrorFields {
                    code,
                    message,
                    fatal,
                } = ErrorFields::deserialize(fields)?;
                ServerFrame::Error {
                    code,
                    message,
                    fatal,
                }
            }
        })
    }
}

impl<'de> Deserialize<'de> for ServerFrame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = ServerFrame;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a server frame: an object tagged by \"type\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerFrame, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first == "type" {
            let tag = map.next_value::<String>()?;
            return Kind::of(&tag)?.read(MapAccessDeserializer::new(map));
        }
        // The slow road: the whole object as a JSON value, the tag taken out of it.
        let mut object = serde_json::Map::new();
        object.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom("a field appears twice"));
            }
        }
        let tag = match object.remove("type") {
            Some(serde_json::Value::String(tag)) => tag,
            Some(_) => return Err(de::Error::custom("the frame's \"type\" is not a string")),
            None => return Err(de::Error::missing_field("type")),
        };
        Kind::of(&tag)?
            .read(serde_json::Value::Object(object))
            .map_err(de::Error::custom)
    }
}
