//! Segmentation filters over attributes (`plan = "Premium" and support_tickets > 2`).

use serde::{Deserialize, Serialize};

use super::Attributes;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
}

/// A segmentation filter. Numbers compare as numbers when both sides parse as
/// numbers; everything else compares as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Filter {
    /// attribute equals value
    Eq {
        /// Attribute name.
        attr: String,
        /// Value.
        value: String,
    },
    /// attribute exists and differs from value
    Ne {
        /// Attribute name.
        attr: String,
        /// Value.
        value: String,
    },
    /// attribute equals one of the values
    In {
        /// Attribute name.
        attr: String,
        /// Values.
        values: Vec<String>,
    },
    /// attribute contains the text (case-insensitive)
    Contains {
        /// Attribute name.
        attr: String,
        /// Text.
        value: String,
    },
    /// ordered comparison
    Cmp {
        /// Attribute name.
        attr: String,
        /// Operator.
        cmp: Comparison,
        /// Value.
        value: String,
    },
    /// attribute is present
    Exists {
        /// Attribute name.
        attr: String,
    },
    /// all of
    And(Vec<Filter>),
    /// any of
    Or(Vec<Filter>),
    /// negation
    Not(Box<Filter>),
}

fn values_equal(a: &str, b: &str) -> bool {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl Filter {
    /// `attr = value`
    pub fn eq(attr: impl Into<String>, value: impl Into<String>) -> Filter {
        Filter::Eq {
            attr: attr.into(),
            value: value.into(),
        }
    }
    /// `attr > value`
    pub fn gt(attr: impl Into<String>, value: impl Into<String>) -> Filter {
        Filter::Cmp {
            attr: attr.into(),
            cmp: Comparison::Gt,
            value: value.into(),
        }
    }

    /// Does a user with these attributes match?
    pub fn matches(&self, attrs: &Attributes) -> bool {
        match self {
            Filter::Eq { attr, value } => attrs.get(attr).is_some_and(|v| values_equal(v, value)),
            Filter::Ne { attr, value } => attrs.get(attr).is_some_and(|v| !values_equal(v, value)),
            Filter::In { attr, values } => attrs
                .get(attr)
                .is_some_and(|v| values.iter().any(|x| values_equal(v, x))),
            Filter::Contains { attr, value } => attrs
                .get(attr)
                .is_some_and(|v| v.to_lowercase().contains(&value.to_lowercase())),
            Filter::Cmp { attr, cmp, value } => attrs.get(attr).is_some_and(|v| {
                let ord = match (v.trim().parse::<f64>(), value.trim().parse::<f64>()) {
                    (Ok(x), Ok(y)) => x.partial_cmp(&y),
                    _ => Some(v.as_str().cmp(value.as_str())),
                };
                match (ord, cmp) {
                    (None, _) => false,
                    (Some(o), Comparison::Gt) => o.is_gt(),
                    (Some(o), Comparison::Gte) => o.is_ge(),
                    (Some(o), Comparison::Lt) => o.is_lt(),
                    (Some(o), Comparison::Lte) => o.is_le(),
                }
            }),
            Filter::Exists { attr } => attrs.contains_key(attr),
            Filter::And(fs) => fs.iter().all(|f| f.matches(attrs)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(attrs)),
            Filter::Not(f) => !f.matches(attrs),
        }
    }
}
