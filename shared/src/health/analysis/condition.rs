//! The conditions of an analysis file: a small boolean language over the
//! measured `result`, e.g. `result <= 0.05`, `result > 0 and result < 1`,
//! `isNaN(result) or result >= 0.99`. Comparisons with NaN are false, as in
//! IEEE 754: a condition meant to pass NaN says so with `isNaN(result)`.

use std::fmt;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    text: String,
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IsNan,
    Compare(Operand, Op, Operand),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Operand {
    Result,
    Number(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Result,
    IsNan,
    Number(f64),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

/// Why a condition does not parse: what, and where (1-based character column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition {text:?}: {reason} at character {column}")]
pub struct ConditionError {
    text: String,
    reason: String,
    column: usize,
}

impl Condition {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, ConditionError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            text,
            tokens: &tokens,
            pos: 0,
        };
        let expr = parser.or()?;
        if let Some((_, column)) = tokens.get(parser.pos) {
            return Err(parser.error("unexpected text after the condition", *column));
        }
        Ok(Self {
            text: text.trim().to_owned(),
            expr,
        })
    }

    /// Whether it holds for `result`.
    pub fn holds(&self, result: f64) -> bool {
        self.expr.eval(result)
    }

    /// The condition as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Expr {
    fn eval(&self, result: f64) -> bool {
        match self {
            Self::Or(a, b) => a.eval(result) || b.eval(result),
            Self::And(a, b) => a.eval(result) && b.eval(result),
            Self::Not(e) => !e.eval(result),
            Self::IsNan => result.is_nan(),
            Self::Compare(a, op, b) => {
                let (a, b) = (a.value(result), b.value(result));
                match op {
                    Op::Lt => a < b,
                    Op::Le => a <= b,
                    Op::Gt => a > b,
                    Op::Ge => a >= b,
                    #[allow(clippy::float_cmp)]
                    Op::Eq => a == b,
                    #[allow(clippy::float_cmp)]
                    Op::Ne => !a.is_nan() && !b.is_nan() && a != b,
                }
            }
        }
    }
}

impl Operand {
    fn value(self, result: f64) -> f64 {
        match self {
            Self::Result => result,
            Self::Number(n) => n,
        }
    }
}

/// Tokens with their 1-based character column.
fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, ConditionError> {
    let chars: Vec<char> = text.chars().collect();
    let error = |reason: &str, at: usize| ConditionError {
        text: text.to_owned(),
        reason: reason.to_owned(),
        column: at + 1,
    };
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let two = chars.get(i + 1).copied();
        let token = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '(' => {
                i += 1;
                Token::Open
            }
            ')' => {
                i += 1;
                Token::Close
            }
            '<' | '>' | '=' | '!' => {
                let (op, len) = match (c, two) {
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('>', _) => (Op::Gt, 1),
                    ('=', Some('=')) => (Op::Eq, 2),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('=', _) => return Err(error("`=` is not a comparison; use `==`", i)),
                    _ => return Err(error("`!` is not an operator; use `not` or `!=`", i)),
                };
                i += len;
                Token::Op(op)
            }
            '&' | '|' => {
                if two != Some(c) {
                    return Err(error("a single `&` or `|`; use `and` / `or`", i));
                }
                i += 2;
                if c == '&' {
                    Token::And
                } else {
                    Token::Or
                }
            }
            c if c.is_ascii_digit() || c == '.' || c == '-' || c == '+' => {
                i += 1;
                while i < chars.len() {
                    let d = chars[i];
                    let exponent_sign = (d == '-' || d == '+') && matches!(chars[i - 1], 'e' | 'E');
                    if d.is_ascii_digit() || d == '.' || d == 'e' || d == 'E' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let word: String = chars[start..i].iter().collect();
                match word.parse::<f64>() {
                    Ok(n) if n.is_finite() => Token::Number(n),
                    _ => return Err(error(&format!("{word:?} is not a number"), start)),
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                match word.as_str() {
                    "result" => Token::Result,
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "isNaN" => Token::IsNan,
                    other => {
                        return Err(error(
                            &format!(
                                "unknown word {other:?} (a condition knows result, isNaN(result), and, or, not)"
                            ),
                            start,
                        ))
                    }
                }
            }
            other => return Err(error(&format!("unexpected character {other:?}"), i)),
        };
        tokens.push((token, start + 1));
    }
    Ok(tokens)
}

struct Parser<'a> {
    text: &'a str,
    tokens: &'a [(Token, usize)],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &str, column: usize) -> ConditionError {
        ConditionError {
            text: self.text.to_owned(),
            reason: reason.to_owned(),
            column,
        }
    }

    fn end_column(&self) -> usize {
        self.text.chars().count() + 1
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn next(&mut self, expected: &str) -> Result<(Token, usize), ConditionError> {
        match self.tokens.get(self.pos) {
            Some((t, c)) => {
                self.pos += 1;
                Ok((t.clone(), *c))
            }
            None => Err(self.error(
                &format!("the condition ends where {expected} was expected"),
                self.end_column(),
            )),
        }
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ConditionError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ConditionError> {
        let (token, column) = self.next("a comparison")?;
        match token {
            Token::Open => {
                let inner = self.or()?;
                match self.next("`)`")? {
                    (Token::Close, _) => Ok(inner),
                    (_, c) => Err(self.error("expected `)`", c)),
                }
            }
            Token::IsNan => {
                for want in [Token::Open, Token::Result, Token::Close] {
                    let (t, c) = self.next("isNaN(result)")?;
                    if t != want {
                        return Err(self.error("isNaN takes `result`: isNaN(result)", c));
                    }
                }
                Ok(Expr::IsNan)
            }
            Token::Result | Token::Number(_) => {
                let left = operand(&token);
                let (op, c) = self.next("a comparison operator")?;
                let Token::Op(op) = op else {
                    return Err(self.error("expected one of < <= > >= == !=", c));
                };
                let (right, c) = self.next("`result` or a number")?;
                if !matches!(right, Token::Result | Token::Number(_)) {
                    return Err(self.error("expected `result` or a number", c));
                }
                let right = operand(&right);
                if left != Operand::Result && right != Operand::Result {
                    return Err(self.error("a comparison must involve `result`", column));
                }
                Ok(Expr::Compare(left, op, right))
            }
            _ => Err(self.error(
                "expected a comparison (e.g. result <= 0.05), isNaN(result) or `(`",
                column,
            )),
        }
    }
}

fn operand(token: &Token) -> Operand {
    match token {
        Token::Number(n) => Operand::Number(*n),
        _ => Operand::Result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(text: &str, result: f64) -> bool {
        Condition::parse(text).unwrap().holds(result)
    }

    #[test]
    fn comparisons_and_or_not_parentheses_and_precedence() {
        assert!(holds("result <= 0.05", 0.05));
        assert!(!holds("result <= 0.05", 0.051));
        assert!(holds("result < 1e-2", 0.001));
        assert!(holds("0.5 > result", 0.4));
        assert!(holds("result == 3", 3.0));
        assert!(holds("result != 3", 2.0));
        assert!(holds("result >= -1 && result < 0", -0.5));
        // `and` binds tighter than `or`.
        assert!(holds("result > 10 or result > 0 and result < 1", 0.5));
        assert!(!holds("(result > 10 or result > 0) and result < 1", 5.0));
        assert!(holds("not (result > 1)", 0.5));
        assert!(holds("result > 1 || result < -1", 2.0));
    }

    #[test]
    fn nan_fails_every_comparison_unless_the_condition_asks_for_it() {
        for text in [
            "result <= 0.05",
            "result > 0.05",
            "result == 0",
            "result != 0",
        ] {
            assert!(!holds(text, f64::NAN), "{text}");
        }
        assert!(holds("isNaN(result) or result <= 0.05", f64::NAN));
        assert!(!holds("not isNaN(result)", f64::NAN));
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            (
                "result = 1",
                "`=` is not a comparison; use `==` at character 8",
            ),
            (
                "result <=",
                "ends where `result` or a number was expected at character 10",
            ),
            (
                "result < 1 and",
                "ends where a comparison was expected at character 15",
            ),
            ("(result < 1", "ends where `)` was expected at character 12"),
            (
                "0.5 < 1",
                "a comparison must involve `result` at character 1",
            ),
            ("rate > 1", "unknown word \"rate\""),
            (
                "result < 1 2",
                "unexpected text after the condition at character 12",
            ),
            ("isNaN(1)", "isNaN takes `result`"),
            ("result < 1 & result > 0", "a single `&` or `|`"),
            ("result < 1..2", "\"1..2\" is not a number"),
            ("", "ends where a comparison was expected at character 1"),
        ];
        for (text, want) in cases {
            let e = Condition::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
