use super::*;

#[test]
fn copy_text_escapes_what_copy_would_misread() {
    let mut out = String::new();
    escape_copy_text(&mut out, "a\tb\nc\\d");
    assert_eq!(out, "a\\tb\\nc\\\\d");
}

#[test]
fn heavy_columns_have_realistic_sizes() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let instructions = sentences(&mut rng, 2_000);
    assert!((2_000..2_100).contains(&instructions.len()));
    let config = json_config(&mut rng, "personality");
    assert!((900..1_400).contains(&config.len()), "{}", config.len());
    assert!(serde_json::from_str::<serde_json::Value>(&config).is_ok());
}

#[test]
fn the_generator_is_deterministic() {
    let a = sentences(&mut StdRng::seed_from_u64(SEED), 300);
    let b = sentences(&mut StdRng::seed_from_u64(SEED), 300);
    assert_eq!(a, b);
}
