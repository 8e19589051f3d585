//! `CASES` and `OUTBOUND_CASES` are written by hand beside the macros that generate the
//! tests: they must name every case, in the macros' order (they had fallen behind: no media
//! case was in `CASES`).

/// The identifiers listed in the `@cases` invocation that follows `marker` in lib.rs.
fn macro_list(lib: &str, marker: &str) -> Vec<String> {
    let start = lib.find(marker).expect("the macro") + marker.len();
    let rest = &lib[start..];
    let list = rest
        .split_once("($block_on)")
        .expect("the @cases invocation")
        .1;
    let list = list.split_once(");").expect("the end of the list").0;
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_case_lists_name_every_generated_case_in_order() {
    let lib = include_str!("../src/lib.rs");
    let suite = macro_list(lib, "macro_rules! conformance_suite {");
    let outbound = macro_list(lib, "macro_rules! outbound_conformance_suite {");
    assert_eq!(ari_conformance::CASES, suite.as_slice());
    assert_eq!(ari_conformance::OUTBOUND_CASES, outbound.as_slice());
    assert!(outbound.iter().all(|c| suite.contains(c)));
}

#[test]
fn every_public_case_is_in_the_suite() {
    // Every file of src/cases (a new file is read without being listed here).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cases");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("src/cases")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 12, "the case files: {paths:?}");
    let sources: Vec<String> = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("a case file"))
        .collect();
    let mut found = 0;
    for source in &sources {
        for line in source.lines() {
            let Some(rest) = line.strip_prefix("pub async fn ") else {
                continue;
            };
            let name = rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .expect("a name");
            assert!(
                ari_conformance::CASES.contains(&name),
                "{name} is not in CASES (nor run by conformance_suite!)"
            );
            found += 1;
        }
    }
    assert_eq!(found, ari_conformance::CASES.len());
}
