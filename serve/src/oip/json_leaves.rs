//! Reading the leaves of a (nested) JSON array straight into typed values.
//!
//! Why not `serde_json::Value`: a tensor sent as JSON is tens of megabytes of numbers, and a
//! `Value` tree costs tens of bytes per number (an FP32 body of 20 MB grew the server by
//! 685 MB that way). Here the raw text is walked once, each leaf converted as it is met, and
//! at most `max` leaves are accepted, so the output is sized by the shape the request was
//! admitted with, never by the data.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::ServeError;

/// One leaf of the array.
pub enum Leaf<'a> {
    /// A JSON number.
    Number(f64),
    /// A JSON string.
    Text(&'a str),
    /// `true`, `false`, `null` or an object, shown as JSON.
    Other(&'static str),
}

impl fmt::Display for Leaf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leaf::Number(x) => write!(f, "{x}"),
            Leaf::Text(s) => write!(f, "{s:?}"),
            Leaf::Other(s) => f.write_str(s),
        }
    }
}

/// Converts every leaf of `raw` (a number, a string, or arrays of them nested to any depth
/// serde_json allows) with `convert(leaf, index)`. More than `max` leaves is an error that
/// stops the walk; `what` names the data in messages.
pub fn leaves<T>(
    raw: &RawValue,
    what: &str,
    max: usize,
    mut convert: impl FnMut(Leaf<'_>, usize) -> Result<T, ServeError>,
) -> Result<Vec<T>, ServeError> {
    let mut walk = Walk {
        out: Vec::new(),
        // Each leaf takes at least two characters ("0,"): room for no more than the text
        // can hold, whatever `max` says.
        room: max.min(raw.get().len() / 2 + 1),
        max,
        what,
        convert: &mut convert,
        error: None,
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let parsed = (&mut walk).deserialize(&mut de);
    if let Some(e) = walk.error {
        return Err(e);
    }
    parsed.map_err(|e| ServeError::Invalid(format!("invalid {what} data: {e}")))?;
    Ok(walk.out)
}

struct Walk<'w, T, F> {
    out: Vec<T>,
    room: usize,
    max: usize,
    what: &'w str,
    convert: &'w mut F,
    /// The first conversion error, kept as it is (serde's errors would add a position).
    error: Option<ServeError>,
}

impl<T, F> Walk<'_, T, F>
where
    F: FnMut(Leaf<'_>, usize) -> Result<T, ServeError>,
{
    fn push<E: de::Error>(&mut self, leaf: Leaf<'_>) -> Result<(), E> {
        let index = self.out.len();
        let result = if index >= self.max {
            Err(ServeError::Invalid(format!(
                "{} data has more than the {} values its shape needs",
                self.what, self.max
            )))
        } else {
            (self.convert)(leaf, index)
        };
        match result {
            Ok(v) => {
                if self.out.capacity() == 0 {
                    self.out.reserve_exact(self.room);
                }
                self.out.push(v);
                Ok(())
            }
            Err(e) => {
                self.error = Some(e);
                Err(E::custom("stopped"))
            }
        }
    }
}

impl<'de, T, F> DeserializeSeed<'de> for &mut Walk<'_, T, F>
where
    F: FnMut(Leaf<'_>, usize) -> Result<T, ServeError>,
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T, F> Visitor<'de> for &mut Walk<'_, T, F>
where
    F: FnMut(Leaf<'_>, usize) -> Result<T, ServeError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, a string, or an array of them")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Leaf::Number(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Leaf::Number(v as f64))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Leaf::Number(v as f64))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Leaf::Text(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Leaf::Other(if v { "true" } else { "false" }))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(Leaf::Other("null"))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        self.push(Leaf::Other("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(text: &str, max: usize) -> Result<Vec<f32>, ServeError> {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        leaves(&raw, "FP32", max, |leaf, _| match leaf {
            Leaf::Number(x) => Ok(x as f32),
            other => Err(ServeError::Invalid(format!("non-number {other}"))),
        })
    }

    #[test]
    fn nested_and_flat_arrays_give_the_same_leaves() {
        assert_eq!(floats("[1, 2.5, -3]", 3).unwrap(), [1.0, 2.5, -3.0]);
        assert_eq!(floats("[[[1], [2.5]], [[-3]]]", 3).unwrap(), [1.0, 2.5, -3.0]);
        assert_eq!(floats("7", 1).unwrap(), [7.0]);
        assert!(floats("[]", 3).unwrap().is_empty());
    }

    #[test]
    fn too_many_leaves_stop_the_walk_and_errors_keep_their_text() {
        let e = floats("[1, 2, 3, 4]", 3).unwrap_err().to_string();
        assert!(e.contains("more than the 3 values"), "{e}");
        let e = floats("[1, \"a\"]", 3).unwrap_err().to_string();
        assert_eq!(e, "non-number \"a\"");
        let e = floats("[1, {\"a\": 1}]", 3).unwrap_err().to_string();
        assert_eq!(e, "non-number an object");
    }
}
