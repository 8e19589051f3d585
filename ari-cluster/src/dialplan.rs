//! Dialplan application data as Asterisk reads it.

/// Arguments `Stasis()` takes at most besides the application's name (`MAX_ARGS` of
/// `app_stasis.c`).
const STASIS_MAX_ARGS: usize = 128;

/// The fields of `Stasis()` application data (`app,arg1,arg2`), the application's name first,
/// split as Asterisk splits them (`AST_STANDARD_APP_ARGS`, that is `__ast_app_separate_args`
/// of `main/app.c` on `,` with `remove_chars`): a comma inside double quotes, parentheses or
/// square brackets does not split; double quotes are removed; a backslash is removed and the
/// character after it taken as it is (`\,` is a comma in the argument, `\\` a backslash);
/// a comma at the very end gives one more, empty, argument; past 128 arguments the rest of
/// the data is the last one, as it is (not unescaped). The arguments of a `StasisStart`.
pub(crate) fn stasis_args(data: &str) -> Vec<String> {
    let max = STASIS_MAX_ARGS + 1;
    let b = data.as_bytes();
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let (mut paren, mut bracket, mut quote) = (0u32, 0u32, false);
    let mut i = 0;
    let mut ended_on_comma = false;
    while i < b.len() && fields.len() < max - 1 {
        let mut field = Vec::new();
        ended_on_comma = false;
        while let Some(&c) = b.get(i) {
            i += 1;
            match c {
                b'(' => paren += 1,
                b')' => paren = paren.saturating_sub(1),
                b'[' => bracket += 1,
                b']' => bracket = bracket.saturating_sub(1),
                b'"' => {
                    quote = !quote;
                    continue;
                }
                b'\\' => {
                    // Removed; the next character is literal (a backslash ending the data is
                    // only removed).
                    if let Some(&next) = b.get(i) {
                        field.push(next);
                        i += 1;
                    }
                    continue;
                }
                b',' if paren == 0 && bracket == 0 && !quote => {
                    ended_on_comma = true;
                    break;
                }
                _ => {}
            }
            field.push(c);
        }
        fields.push(field);
    }
    if i < b.len() {
        fields.push(b[i..].to_vec());
    } else if ended_on_comma {
        fields.push(Vec::new());
    }
    // Only ASCII bytes were removed, each whole: what is left is UTF-8.
    fields
        .into_iter()
        .map(|f| {
            String::from_utf8(f)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(data: &str) -> Vec<String> {
        stasis_args(data)
    }

    #[test]
    fn commas_split_unless_escaped_quoted_or_grouped() {
        assert_eq!(args("hello"), ["hello"]);
        assert_eq!(args("hello,a,b"), ["hello", "a", "b"]);
        assert_eq!(args("hello,a\\,b,c"), ["hello", "a,b", "c"]);
        assert_eq!(args("hello,\"a,b\",c"), ["hello", "a,b", "c"]);
        assert_eq!(
            args("hello,say \"hi, you\" now"),
            ["hello", "say hi, you now"]
        );
        assert_eq!(args("hello,f(a,b),[x,y]"), ["hello", "f(a,b)", "[x,y]"]);
        assert_eq!(args("hello,\\\\,x"), ["hello", "\\", "x"]);
        assert_eq!(args("hello,\\\"q"), ["hello", "\"q"]);
        assert_eq!(args("hello,\\(,x"), ["hello", "(", "x"]);
        // A closing parenthesis or bracket with none open is kept and counts for nothing.
        assert_eq!(args("hello,),]a,b"), ["hello", ")", "]a", "b"]);
    }

    #[test]
    fn empty_arguments_are_kept_as_asterisk_keeps_them() {
        assert_eq!(args(""), Vec::<String>::new());
        assert_eq!(args("hello,"), ["hello", ""]);
        assert_eq!(args("hello,,b"), ["hello", "", "b"]);
        assert_eq!(args("hello,a,"), ["hello", "a", ""]);
        assert_eq!(args(",a"), ["", "a"]);
        // A backslash ending the data is removed.
        assert_eq!(args("hello,a\\"), ["hello", "a"]);
        // An unclosed quote keeps the rest in one argument.
        assert_eq!(args("hello,\"a,b"), ["hello", "a,b"]);
    }

    #[test]
    fn past_128_arguments_the_rest_is_the_last_one_as_it_is() {
        let many: Vec<String> = (0..140).map(|i| format!("a{i}")).collect();
        let data = format!("hello,{},x\\,\"y\"", many.join(","));
        let got = args(&data);
        assert_eq!(got.len(), 129);
        assert_eq!(got[1..128], many[..127]);
        let rest = format!("{},x\\,\"y\"", many[127..].join(","));
        assert_eq!(got[128], rest);
        // Exactly 128 arguments: all split.
        let data = format!("hello,{}", many[..128].join(","));
        assert_eq!(args(&data)[1..], many[..128]);
    }

    /// How an application's arguments are written in the dialplan so that `Stasis()` gets
    /// them as they are: each special character escaped with a backslash.
    fn escape(arg: &str) -> String {
        let mut out = String::new();
        for c in arg.chars() {
            if matches!(c, ',' | '\\' | '"' | '(' | ')' | '[' | ']') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    proptest! {
        #[test]
        fn escaped_arguments_come_back_as_written(
            app in "[a-z][a-z0-9:_-]{0,12}",
            given in proptest::collection::vec("[ -~\\u{e9}\\u{263a}]{0,12}", 0..20),
        ) {
            let data = std::iter::once(app.clone())
                .chain(given.iter().map(|a| escape(a)))
                .collect::<Vec<_>>()
                .join(",");
            let mut want = vec![app];
            want.extend(given);
            prop_assert_eq!(stasis_args(&data), want);
        }

        #[test]
        fn data_without_special_characters_splits_on_every_comma(
            data in "[a-zA-Z0-9 ,.:_-]{0,60}",
        ) {
            let got = stasis_args(&data);
            if data.is_empty() {
                prop_assert!(got.is_empty());
            } else {
                prop_assert_eq!(got, data.split(',').map(String::from).collect::<Vec<_>>());
            }
        }

        #[test]
        fn any_data_gives_at_most_129_fields_and_loses_no_plain_character(
            data in "[ -~\\u{e9}]{0,300}",
        ) {
            let got = stasis_args(&data);
            prop_assert!(got.len() <= 129);
            let plain = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).count();
            prop_assert_eq!(got.iter().map(|f| plain(f)).sum::<usize>(), plain(&data));
        }
    }
}
