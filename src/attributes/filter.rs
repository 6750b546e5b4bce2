//! Segmentation filters over attributes (`plan = "Premium" and support_tickets > 2`).

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::Attributes;
use super::number::Decimal;
use crate::{Error, ErrorKind, Result};

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

/// A segmentation filter.
///
/// Values are text. When the filter's value is a plain decimal number (see
/// [`Decimal`]), `=`, `!=`, `in` and the ordered comparisons compare as
/// numbers, exactly, and match only user values that are plain decimal numbers
/// too: an empty cell, `n/a` or `1,234` never matches `tickets < 5`, and
/// `3.0 = 3`. Otherwise values compare as text (`=` exactly, `<` by bytes).
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

/// `user = wanted`: numerically when `wanted` is a number (then `user` must be one).
fn values_equal(user: &str, wanted: &str) -> bool {
    match Decimal::parse(wanted) {
        Some(w) => Decimal::parse(user).is_some_and(|u| u == w),
        None => user == wanted,
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
                let ord = match Decimal::parse(value) {
                    // A numeric comparison only matches numbers.
                    Some(wanted) => Decimal::parse(v).map(|user| user.cmp(&wanted)),
                    None => Some(v.as_str().cmp(value.as_str())),
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

// ---------------------------------------------------------------------------
// Text syntax
// ---------------------------------------------------------------------------

/// How deeply parentheses and `not` may nest in a filter expression.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An unquoted word: an attribute name, a keyword or a bare value.
    Word(String),
    /// A quoted string.
    Str(String),
    LParen,
    RParen,
    Comma,
    Op(Op),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::Op(op) => format!("`{}`", op_text(*op)),
            Tok::End => "the end of the input".to_owned(),
        }
    }

    fn keyword(&self) -> Option<Keyword> {
        let Tok::Word(w) = self else { return None };
        keyword(w)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
    In,
    Contains,
    Exists,
}

fn keyword(word: &str) -> Option<Keyword> {
    let k = match word.to_ascii_lowercase().as_str() {
        "and" => Keyword::And,
        "or" => Keyword::Or,
        "not" => Keyword::Not,
        "in" => Keyword::In,
        "contains" => Keyword::Contains,
        "exists" => Keyword::Exists,
        _ => return None,
    };
    Some(k)
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Gt => ">",
        Op::Gte => ">=",
        Op::Lt => "<",
        Op::Lte => "<=",
    }
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | ',' | '=' | '!' | '<' | '>' | '"' | '\'')
}

/// Formats an error about `input` at byte offset `at`.
fn syntax_error(input: &str, at: usize, what: impl fmt::Display) -> Error {
    let column = input.get(..at).map_or(at, |s| s.chars().count()) + 1;
    Error::new(
        ErrorKind::InvalidInput,
        format!("invalid filter at character {column}: {what}"),
    )
}

fn tokenize(input: &str) -> Result<Vec<(usize, Tok)>> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        chars.next();
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' => {
                if chars.peek().is_some_and(|&(_, n)| n == '=') {
                    chars.next();
                }
                Tok::Op(Op::Eq)
            }
            '!' => {
                if chars.peek().is_some_and(|&(_, n)| n == '=') {
                    chars.next();
                    Tok::Op(Op::Ne)
                } else {
                    return Err(syntax_error(
                        input,
                        at,
                        "expected `!=`, found `!` (use `not` to negate)",
                    ));
                }
            }
            '<' => match chars.peek() {
                Some(&(_, '=')) => {
                    chars.next();
                    Tok::Op(Op::Lte)
                }
                Some(&(_, '>')) => {
                    chars.next();
                    Tok::Op(Op::Ne)
                }
                _ => Tok::Op(Op::Lt),
            },
            '>' => {
                if chars.peek().is_some_and(|&(_, n)| n == '=') {
                    chars.next();
                    Tok::Op(Op::Gte)
                } else {
                    Tok::Op(Op::Gt)
                }
            }
            '"' | '\'' => {
                let quote = c;
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => text.push('\n'),
                            Some((_, 't')) => text.push('\t'),
                            Some((_, other)) => text.push(other),
                            None => break,
                        },
                        c if c == quote => {
                            closed = true;
                            break;
                        }
                        c => text.push(c),
                    }
                }
                if !closed {
                    return Err(syntax_error(
                        input,
                        at,
                        format!("unterminated string: expected a closing `{quote}`"),
                    ));
                }
                Tok::Str(text)
            }
            c => {
                let mut word = String::from(c);
                while let Some(&(_, n)) = chars.peek() {
                    if !is_word_char(n) {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                Tok::Word(word)
            }
        };
        tokens.push((at, tok));
    }
    tokens.push((input.len(), Tok::End));
    Ok(tokens)
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::End, |(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.input.len(), |(at, _)| *at)
    }

    fn advance(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        tok
    }

    fn expected(&self, what: &str) -> Error {
        syntax_error(
            self.input,
            self.offset(),
            format!("expected {what}, found {}", self.peek().describe()),
        )
    }

    fn eat_keyword(&mut self, k: Keyword) -> bool {
        if self.peek().keyword() == Some(k) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(syntax_error(
                self.input,
                self.offset(),
                format!("the expression nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    /// or_expr := and_expr ("or" and_expr)*
    fn or_expr(&mut self) -> Result<Filter> {
        self.joined(Keyword::Or, Self::and_expr, Filter::Or)
    }

    /// and_expr := unary ("and" unary)*
    fn and_expr(&mut self) -> Result<Filter> {
        self.joined(Keyword::And, Self::unary, Filter::And)
    }

    /// `operand (keyword operand)*`, combined when there is more than one.
    fn joined(
        &mut self,
        keyword: Keyword,
        operand: fn(&mut Self) -> Result<Filter>,
        combine: fn(Vec<Filter>) -> Filter,
    ) -> Result<Filter> {
        let mut items = vec![operand(self)?];
        while self.eat_keyword(keyword) {
            items.push(operand(self)?);
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            combine(items)
        })
    }

    /// unary := "not" unary | "(" or_expr ")" | "exists" name | condition
    fn unary(&mut self) -> Result<Filter> {
        if self.eat_keyword(Keyword::Not) {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if *self.peek() == Tok::LParen {
            self.advance();
            self.enter()?;
            let inner = self.or_expr()?;
            self.depth -= 1;
            if *self.peek() != Tok::RParen {
                return Err(self.expected("`)`, `and` or `or`"));
            }
            self.advance();
            return Ok(inner);
        }
        if self.eat_keyword(Keyword::Exists) {
            let attr = self.name()?;
            return Ok(Filter::Exists { attr });
        }
        self.condition()
    }

    /// An attribute name: a bare word that is not a keyword, or a quoted string.
    fn name(&mut self) -> Result<String> {
        match self.peek() {
            Tok::Word(w) if keyword(w).is_none() => {
                let w = w.clone();
                self.advance();
                Ok(w)
            }
            Tok::Str(s) => {
                let s = s.clone();
                self.advance();
                Ok(s)
            }
            Tok::Word(_) => Err(self.expected("an attribute name (quote names that are keywords)")),
            _ => Err(self.expected("an attribute name")),
        }
    }

    /// A value: a quoted string, a number or a bare word.
    fn value(&mut self) -> Result<String> {
        match self.peek() {
            Tok::Word(w) if keyword(w).is_none() => {
                let w = w.clone();
                self.advance();
                Ok(w)
            }
            Tok::Str(s) => {
                let s = s.clone();
                self.advance();
                Ok(s)
            }
            _ => Err(self.expected("a value (a quoted string, a number or a word)")),
        }
    }

    /// condition := name op value | name ["not"] "in" "(" values ")" | name ["not"] "contains" value
    fn condition(&mut self) -> Result<Filter> {
        let attr = self.name()?;
        let negated = self.eat_keyword(Keyword::Not);
        let filter = match self.peek().clone() {
            Tok::Op(op) if !negated => {
                self.advance();
                let value = self.value()?;
                match op {
                    Op::Eq => Filter::Eq { attr, value },
                    Op::Ne => Filter::Ne { attr, value },
                    Op::Gt => Filter::Cmp {
                        attr,
                        cmp: Comparison::Gt,
                        value,
                    },
                    Op::Gte => Filter::Cmp {
                        attr,
                        cmp: Comparison::Gte,
                        value,
                    },
                    Op::Lt => Filter::Cmp {
                        attr,
                        cmp: Comparison::Lt,
                        value,
                    },
                    Op::Lte => Filter::Cmp {
                        attr,
                        cmp: Comparison::Lte,
                        value,
                    },
                }
            }
            tok if tok.keyword() == Some(Keyword::In) => {
                self.advance();
                if *self.peek() != Tok::LParen {
                    return Err(self.expected("`(` to start the list after `in`"));
                }
                self.advance();
                let mut values = Vec::new();
                if *self.peek() != Tok::RParen {
                    loop {
                        values.push(self.value()?);
                        match self.peek() {
                            Tok::Comma => {
                                self.advance();
                            }
                            Tok::RParen => break,
                            _ => return Err(self.expected("`,` or `)` in the list")),
                        }
                    }
                }
                self.advance();
                Filter::In { attr, values }
            }
            tok if tok.keyword() == Some(Keyword::Contains) => {
                self.advance();
                let value = self.value()?;
                Filter::Contains { attr, value }
            }
            _ if negated => return Err(self.expected("`in` or `contains` after `not`")),
            _ => {
                return Err(self
                    .expected("an operator (`=`, `!=`, `>`, `>=`, `<`, `<=`, `in`, `contains`)"));
            }
        };
        Ok(if negated {
            Filter::Not(Box::new(filter))
        } else {
            filter
        })
    }
}

impl Filter {
    /// Parses the filter text syntax.
    ///
    /// ```text
    /// expr      := term ("or" term)*            -- `and` binds tighter than `or`
    /// term      := factor ("and" factor)*
    /// factor    := "not" factor | "(" expr ")" | "exists" name | condition
    /// condition := name ("=" | "==" | "!=" | "<>" | ">" | ">=" | "<" | "<=") value
    ///            | name ["not"] "in" "(" [value ("," value)*] ")"
    ///            | name ["not"] "contains" value
    /// name      := word | quoted string
    /// value     := quoted string ("…" or '…', `\` escapes) | number | word
    /// ```
    /// Keywords are case-insensitive; an attribute named like a keyword must be
    /// quoted. Errors ([`ErrorKind::InvalidInput`]) name the character position
    /// and what was expected there.
    ///
    /// ```
    /// use switchboard::Filter;
    /// let f = Filter::parse(r#"plan = "Premium" and support_tickets > 2"#).unwrap();
    /// assert_eq!(f, Filter::And(vec![Filter::eq("plan", "Premium"), Filter::gt("support_tickets", "2")]));
    ///
    /// let err = Filter::parse("plan = ").unwrap_err();
    /// assert!(err.to_string().contains("character 8"));
    /// ```
    pub fn parse(input: &str) -> Result<Filter> {
        let tokens = tokenize(input)?;
        let mut parser = Parser {
            input,
            tokens,
            pos: 0,
            depth: 0,
        };
        if *parser.peek() == Tok::End {
            return Err(parser.expected("a condition"));
        }
        let filter = parser.or_expr()?;
        if *parser.peek() != Tok::End {
            let what = if *parser.peek() == Tok::RParen {
                "`and`, `or` or the end (unbalanced `)`)"
            } else {
                "`and`, `or` or the end of the input"
            };
            return Err(parser.expected(what));
        }
        Ok(filter)
    }
}

impl std::str::FromStr for Filter {
    type Err = Error;

    fn from_str(s: &str) -> Result<Filter> {
        Filter::parse(s)
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

fn write_name(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    if !name.is_empty() && name.chars().all(is_word_char) && keyword(name).is_none() {
        f.write_str(name)
    } else {
        write_quoted(f, name)
    }
}

impl Filter {
    /// Writes `self` as an operand of `and` / `or` / `not`, parenthesised if needed.
    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, parent_is_and: bool) -> fmt::Result {
        let needs_parens = match self {
            Filter::Or(items) => items.len() != 1,
            Filter::And(items) => !parent_is_and || items.len() != 1,
            _ => false,
        };
        if needs_parens {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

/// Writes the text syntax [`Filter::parse`] reads back: for any filter the parser
/// produced, `Filter::parse(&f.to_string())` gives `f` again. Values are always
/// quoted. An empty `And` / `Or` (which the parser never produces) is written
/// as `not ()` / `()` and does not parse.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cmp = |f: &mut fmt::Formatter<'_>, attr: &str, op: &str, value: &str| {
            write_name(f, attr)?;
            write!(f, " {op} ")?;
            write_quoted(f, value)
        };
        match self {
            Filter::Eq { attr, value } => cmp(f, attr, "=", value),
            Filter::Ne { attr, value } => cmp(f, attr, "!=", value),
            Filter::Contains { attr, value } => cmp(f, attr, "contains", value),
            Filter::Cmp {
                attr,
                cmp: c,
                value,
            } => {
                let op = match c {
                    Comparison::Gt => ">",
                    Comparison::Gte => ">=",
                    Comparison::Lt => "<",
                    Comparison::Lte => "<=",
                };
                cmp(f, attr, op, value)
            }
            Filter::In { attr, values } => {
                write_name(f, attr)?;
                f.write_str(" in (")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_quoted(f, v)?;
                }
                f.write_char(')')
            }
            Filter::Exists { attr } => {
                f.write_str("exists ")?;
                write_name(f, attr)
            }
            Filter::And(items) if items.is_empty() => f.write_str("not ()"),
            Filter::Or(items) if items.is_empty() => f.write_str("()"),
            Filter::And(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    item.fmt_operand(f, true)?;
                }
                Ok(())
            }
            Filter::Or(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    item.fmt_operand(f, false)?;
                }
                Ok(())
            }
            Filter::Not(inner) => {
                f.write_str("not ")?;
                match **inner {
                    Filter::And(_) | Filter::Or(_) | Filter::Not(_) => write!(f, "({inner})"),
                    _ => write!(f, "{inner}"),
                }
            }
        }
    }
}
