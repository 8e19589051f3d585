//! A small backtracking regular-expression matcher (test support for the scenario replay):
//! literals, `.`, escapes (`\d \s \w`, escaped punctuation), classes `[a-z0-9]` / `[^…]`,
//! groups `( … )` with `|`, quantifiers `* + ? {n} {n,} {n,m}`, anchors `^` and `$`.
//! [`re_match`] behaves like Python's `re.match`: anchored at the start only.

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Any,
    Class(bool, Vec<(char, char)>),
    Group(Vec<Vec<Piece>>),
    Start,
    End,
}

#[derive(Debug, Clone)]
struct Piece {
    node: Node,
    min: usize,
    max: usize,
}

struct Parser<'a> {
    c: &'a [char],
    i: usize,
}

impl Parser<'_> {
    fn alts(&mut self) -> Option<Vec<Vec<Piece>>> {
        let mut alts = vec![self.seq()?];
        while self.i < self.c.len() && self.c[self.i] == '|' {
            self.i += 1;
            alts.push(self.seq()?);
        }
        Some(alts)
    }

    fn seq(&mut self) -> Option<Vec<Piece>> {
        let mut out = Vec::new();
        while self.i < self.c.len() {
            let ch = self.c[self.i];
            if ch == '|' || ch == ')' {
                break;
            }
            self.i += 1;
            let node = match ch {
                '.' => Node::Any,
                '^' => Node::Start,
                '$' => Node::End,
                '(' => {
                    if self.c.get(self.i) == Some(&'?') && self.c.get(self.i + 1) == Some(&':') {
                        self.i += 2;
                    }
                    let a = self.alts()?;
                    if self.c.get(self.i) != Some(&')') {
                        return None;
                    }
                    self.i += 1;
                    Node::Group(a)
                }
                '[' => self.class()?,
                '\\' => {
                    let e = *self.c.get(self.i)?;
                    self.i += 1;
                    escape(e)
                }
                c => Node::Char(c),
            };
            let (min, max) = self.quant()?;
            out.push(Piece { node, min, max });
        }
        Some(out)
    }

    fn class(&mut self) -> Option<Node> {
        let mut neg = false;
        if self.c.get(self.i) == Some(&'^') {
            neg = true;
            self.i += 1;
        }
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let ch = *self.c.get(self.i)?;
            self.i += 1;
            if ch == ']' && !first {
                break;
            }
            first = false;
            let lo = if ch == '\\' {
                let e = *self.c.get(self.i)?;
                self.i += 1;
                match escape(e) {
                    Node::Class(false, r) => {
                        items.extend(r);
                        continue;
                    }
                    Node::Char(c) => c,
                    _ => e,
                }
            } else {
                ch
            };
            if self.c.get(self.i) == Some(&'-') && self.c.get(self.i + 1).is_some_and(|c| *c != ']')
            {
                let hi = self.c[self.i + 1];
                self.i += 2;
                items.push((lo, hi));
            } else {
                items.push((lo, lo));
            }
        }
        Some(Node::Class(neg, items))
    }

    fn quant(&mut self) -> Option<(usize, usize)> {
        let q = match self.c.get(self.i) {
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('?') => (0, 1),
            Some('{') => {
                let close = self.c[self.i..].iter().position(|c| *c == '}')? + self.i;
                let inner: String = self.c[self.i + 1..close].iter().collect();
                self.i = close;
                match inner.split_once(',') {
                    None => {
                        let n = inner.trim().parse().ok()?;
                        (n, n)
                    }
                    Some((a, b)) => (
                        a.trim().parse().ok()?,
                        if b.trim().is_empty() {
                            usize::MAX
                        } else {
                            b.trim().parse().ok()?
                        },
                    ),
                }
            }
            _ => return Some((1, 1)),
        };
        self.i += 1;
        if self.c.get(self.i) == Some(&'?') {
            self.i += 1; // lazy: treated as greedy (we only ask "does it match")
        }
        Some(q)
    }
}

fn escape(e: char) -> Node {
    match e {
        'd' => Node::Class(false, vec![('0', '9')]),
        's' => Node::Class(
            false,
            vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')],
        ),
        'w' => Node::Class(false, vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')]),
        'n' => Node::Char('\n'),
        't' => Node::Char('\t'),
        c => Node::Char(c),
    }
}

fn one(node: &Node, s: &[char], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match node {
        Node::Char(c) => pos < s.len() && s[pos] == *c && k(pos + 1),
        Node::Any => pos < s.len() && s[pos] != '\n' && k(pos + 1),
        Node::Class(neg, items) => {
            pos < s.len()
                && (items.iter().any(|(lo, hi)| *lo <= s[pos] && s[pos] <= *hi) != *neg)
                && k(pos + 1)
        }
        Node::Group(alts) => alts.iter().any(|seq| seq_match(seq, s, pos, k)),
        Node::Start => pos == 0 && k(pos),
        Node::End => pos == s.len() && k(pos),
    }
}

fn rep(
    p: &Piece,
    count: usize,
    rest: &[Piece],
    s: &[char],
    pos: usize,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if count < p.max
        && one(&p.node, s, pos, &mut |np| {
            if np == pos && count >= p.min {
                return false; // no progress
            }
            rep(p, count + 1, rest, s, np, k)
        })
    {
        return true;
    }
    count >= p.min && seq_match(rest, s, pos, k)
}

fn seq_match(seq: &[Piece], s: &[char], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match seq.split_first() {
        None => k(pos),
        Some((p, rest)) => rep(p, 0, rest, s, pos, k),
    }
}

/// Whether `pattern` matches at the start of `text` (Python `re.match`). An invalid
/// pattern is compared as a literal prefix.
pub(crate) fn re_match(pattern: &str, text: &str) -> bool {
    let pc: Vec<char> = pattern.chars().collect();
    let mut p = Parser { c: &pc, i: 0 };
    let parsed = p.alts().filter(|_| p.i == pc.len());
    let s: Vec<char> = text.chars().collect();
    match parsed {
        Some(alts) => alts.iter().any(|seq| seq_match(seq, &s, 0, &mut |_| true)),
        None => text.starts_with(pattern),
    }
}

/// Escapes regex metacharacters (like Python's `re.escape` for our purposes).
#[cfg(test)]
pub(crate) fn re_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if "\\.^$*+?()[]{}|-".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_python_re_match() {
        assert!(re_match("s@ts\\-continue:2$", "s@ts-continue:2"));
        assert!(!re_match("s@ts\\-continue:2$", "s@ts-continue:21"));
        assert!(re_match(
            "Local/one@x-[0-9a-f]{8};1$",
            "Local/one@x-0000001a;1"
        ));
        assert!(!re_match(
            "Local/one@x-[0-9a-f]{8};1$",
            "Local/one@x-0000001;1"
        ));
        assert!(re_match("[0-9]{10}\\.[0-9]+$", "1795691627.12"));
        assert!(re_match(
            ".*/messages\\.log$",
            "/var/log/asterisk/messages.log"
        ));
        assert!(re_match("\\s*VERBOSE\\s*$", "  VERBOSE "));
        assert!(re_match(
            " ?NOTICE WARNING ERROR ?$",
            "NOTICE WARNING ERROR "
        ));
        assert!(re_match("channel[12]$", "channel2"));
        assert!(re_match(
            "Channel(Entered|Left)Bridge$",
            "ChannelLeftBridge"
        ));
        assert!(re_match(".+", "x"));
        assert!(!re_match(".+", ""));
        assert!(re_match("abc", "abcdef"));
        assert!(!re_match("^b", "abc"));
        assert!(re_match(&re_escape("a.b(c)"), "a.b(c)"));
        assert!(!re_match(&re_escape("a.b"), "axb"));
    }
}
