//! Typed, checked reading of node attributes, and [`Node`], the handle by which the checks
//! and rules name a node in their errors.
//!
//! ONNX keeps every attribute in one message with a field per type (`i`, `f`, `ints`, `s`,
//! ...) and a `type` tag that says which field is meant. Reading a field without looking at
//! the tag turns an attribute of the wrong type (an `axis` stored as a float) into a silent
//! zero or empty list, and so into a wrong gradient. The accessors here look at the tag and
//! fail with [`AttackError::Attribute`], naming the node and the attribute, instead.

use std::ops::Deref;

use engine::onnx::proto::attribute_proto::AttributeType;
use engine::onnx::proto::{AttributeProto, NodeProto};

use super::error::AttackError;

/// A node of the forward graph with its position in it, so that errors can name it (by its
/// name, or `#index` when it has none). Dereferences to the [`NodeProto`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node<'a> {
    proto: &'a NodeProto,
    index: usize,
}

impl<'a> Node<'a> {
    /// The `index`-th node of the graph.
    pub(crate) fn new(proto: &'a NodeProto, index: usize) -> Self {
        Self { proto, index }
    }

    /// How errors name the node: its name, or `#index` when it has none.
    pub(crate) fn label(self) -> String {
        if self.proto.name.is_empty() {
            format!("#{}", self.index)
        } else {
            self.proto.name.clone()
        }
    }

    /// The error saying why the node's rule cannot handle it.
    pub(crate) fn unsupported(self, reason: impl Into<String>) -> AttackError {
        AttackError::Unsupported {
            op: self.proto.op_type.clone(),
            node: self.label(),
            reason: reason.into(),
        }
    }

    /// Input `i`, if the node gives it (present and not the empty name ONNX uses for an
    /// omitted optional input).
    pub(crate) fn given(self, i: usize) -> Option<&'a str> {
        self.proto.input.get(i).map(String::as_str).filter(|v| !v.is_empty())
    }
}

impl Deref for Node<'_> {
    type Target = NodeProto;

    fn deref(&self) -> &NodeProto {
        self.proto
    }
}

/// Attribute `name` of `n` if it has it, after checking that it is stored as `expected`.
///
/// An attribute without a type tag (`UNDEFINED`, which writers before IR version 3 could
/// leave) is taken to have the type asked for: its field is read as it always was.
fn get<'a>(n: Node<'a>, name: &str, expected: AttributeType) -> Result<Option<&'a AttributeProto>, AttackError> {
    let Some(a) = n.proto.attribute.iter().find(|a| a.name == name) else {
        return Ok(None);
    };
    match a.type_.enum_value() {
        Ok(t) if t == expected || t == AttributeType::UNDEFINED => Ok(Some(a)),
        found => Err(AttackError::Attribute {
            op: n.op_type.clone(),
            node: n.label(),
            attribute: name.to_string(),
            expected: type_name(expected),
            found: match found {
                Ok(t) => type_name(t).to_string(),
                Err(code) => format!("type {code}"),
            },
        }),
    }
}

/// How errors write an attribute type: as ONNX names it.
fn type_name(t: AttributeType) -> &'static str {
    match t {
        AttributeType::UNDEFINED => "UNDEFINED",
        AttributeType::FLOAT => "FLOAT",
        AttributeType::INT => "INT",
        AttributeType::STRING => "STRING",
        AttributeType::TENSOR => "TENSOR",
        AttributeType::GRAPH => "GRAPH",
        AttributeType::SPARSE_TENSOR => "SPARSE_TENSOR",
        AttributeType::TYPE_PROTO => "TYPE_PROTO",
        AttributeType::FLOATS => "FLOATS",
        AttributeType::INTS => "INTS",
        AttributeType::STRINGS => "STRINGS",
        AttributeType::TENSORS => "TENSORS",
        AttributeType::GRAPHS => "GRAPHS",
        AttributeType::SPARSE_TENSORS => "SPARSE_TENSORS",
        AttributeType::TYPE_PROTOS => "TYPE_PROTOS",
    }
}

/// Integer attribute `name` of `n`, `None` if absent; an error if it is not an `INT`.
pub(crate) fn int(n: Node<'_>, name: &str) -> Result<Option<i64>, AttackError> {
    Ok(get(n, name, AttributeType::INT)?.map(|a| a.i))
}

/// Integer attribute `name` of `n`, or `default` if absent; an error if it is not an `INT`.
pub(crate) fn int_or(n: Node<'_>, name: &str, default: i64) -> Result<i64, AttackError> {
    Ok(int(n, name)?.unwrap_or(default))
}

/// Float attribute `name` of `n`, `None` if absent; an error if it is not a `FLOAT`.
pub(crate) fn float(n: Node<'_>, name: &str) -> Result<Option<f32>, AttackError> {
    Ok(get(n, name, AttributeType::FLOAT)?.map(|a| a.f))
}

/// Float attribute `name` of `n`, or `default` if absent; an error if it is not a `FLOAT`.
pub(crate) fn float_or(n: Node<'_>, name: &str, default: f32) -> Result<f32, AttackError> {
    Ok(float(n, name)?.unwrap_or(default))
}

/// Integer-list attribute `name` of `n`, `None` if absent; an error if it is not `INTS`.
pub(crate) fn ints(n: Node<'_>, name: &str) -> Result<Option<Vec<i64>>, AttackError> {
    Ok(get(n, name, AttributeType::INTS)?.map(|a| a.ints.clone()))
}

/// String attribute `name` of `n` (UTF-8, invalid bytes replaced), `None` if absent; an
/// error if it is not a `STRING`.
pub(crate) fn string(n: Node<'_>, name: &str) -> Result<Option<String>, AttackError> {
    Ok(get(n, name, AttributeType::STRING)?.map(|a| String::from_utf8_lossy(&a.s).into_owned()))
}

#[cfg(test)]
mod tests {
    use engine::onnx::Attr;

    use super::*;

    fn node(name: &str, attrs: Vec<Attr>) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = "Concat".into();
        n.name = name.into();
        n.attribute = attrs.into_iter().map(Attr::into_proto).collect();
        n
    }

    #[test]
    fn attributes_are_read_by_type() {
        let proto = node(
            "cat",
            vec![
                Attr::int("axis", 1),
                Attr::float("alpha", 0.5),
                Attr::ints("pads", &[1, 2]),
                Attr::string("mode", "reflect"),
            ],
        );
        let n = Node::new(&proto, 0);
        assert_eq!(int(n, "axis").unwrap(), Some(1));
        assert_eq!(int_or(n, "group", 1).unwrap(), 1);
        assert_eq!(float(n, "alpha").unwrap(), Some(0.5));
        assert_eq!(float_or(n, "beta", 0.25).unwrap(), 0.25);
        assert_eq!(ints(n, "pads").unwrap(), Some(vec![1, 2]));
        assert_eq!(string(n, "mode").unwrap().as_deref(), Some("reflect"));
        assert_eq!(string(n, "auto_pad").unwrap(), None);

        // No type tag (old writers): read as the type asked for.
        let mut untyped = node("old", vec![Attr::int("axis", 2)]);
        untyped.attribute[0].type_ = AttributeType::UNDEFINED.into();
        assert_eq!(int(Node::new(&untyped, 3), "axis").unwrap(), Some(2));
    }

    #[test]
    fn an_attribute_of_the_wrong_type_names_the_node_and_the_attribute() {
        let proto = node("cat", vec![Attr::float("axis", 1.0), Attr::ints("mode", &[0])]);
        let n = Node::new(&proto, 7);
        match int(n, "axis") {
            Err(AttackError::Attribute {
                op,
                node,
                attribute,
                expected,
                found,
            }) => {
                assert_eq!(
                    (op.as_str(), node.as_str(), attribute.as_str()),
                    ("Concat", "cat", "axis")
                );
                assert_eq!((expected, found.as_str()), ("INT", "FLOAT"));
            }
            other => panic!("expected an Attribute error, got {other:?}"),
        }
        let msg = string(n, "mode").unwrap_err().to_string();
        assert!(
            msg.contains("`mode`") && msg.contains("`cat`") && msg.contains("INTS") && msg.contains("STRING"),
            "{msg}"
        );
        // A node without a name is named by its index.
        let unnamed = node("", vec![Attr::string("axis", "1")]);
        let msg = int_or(Node::new(&unnamed, 4), "axis", 0).unwrap_err().to_string();
        assert!(msg.contains("`#4`") && msg.contains("`axis`"), "{msg}");
        assert!(ints(Node::new(&unnamed, 4), "axis").is_err() && float(Node::new(&unnamed, 4), "axis").is_err());
    }
}
