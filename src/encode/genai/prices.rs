//! What an LLM call cost: per-token prices by provider and model, from the table otelephant
//! ships (`prices/litellm.json`, derived from LiteLLM's MIT-licensed model price file; notice in
//! `prices/LICENSE-litellm`) and the user's own file in the same format (`llm.price_file`),
//! whose entries replace or add to the shipped ones. Loaded once at start and read by every
//! encoder (see [`install`]).

use std::{collections::HashMap, sync::OnceLock};

use serde::Deserialize;

/// The shipped table, in LiteLLM's format.
pub const SHIPPED: &str = include_str!("../../../prices/litellm.json");

/// The table the encoders price with: the one [`install`]ed at start, else the shipped one.
static CURRENT: OnceLock<Prices> = OnceLock::new();

/// Makes `prices` the table every call is priced with from now on; the first call wins (the
/// server installs its table once, at start).
pub fn install(prices: Prices) {
    let _ = CURRENT.set(prices);
}

/// The table in force (see [`CURRENT`]).
pub fn current() -> &'static Prices {
    CURRENT.get_or_init(Prices::shipped)
}

/// A call's tokens, as the conventions count them: cached and written-to-cache tokens are
/// among the input tokens, reasoning tokens among the output tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cache_read: Option<i64>,
    pub cache_write: Option<i64>,
    pub reasoning: Option<i64>,
}

/// A model's prices in USD per token. Cached input, input written to the cache and reasoning
/// output have their own rates where the table gives them, else the plain rate.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
pub struct Price {
    #[serde(default, rename = "input_cost_per_token")]
    pub input: Option<f64>,
    #[serde(default, rename = "output_cost_per_token")]
    pub output: Option<f64>,
    #[serde(default, rename = "cache_read_input_token_cost")]
    pub cache_read: Option<f64>,
    #[serde(default, rename = "cache_creation_input_token_cost")]
    pub cache_write: Option<f64>,
    #[serde(default, rename = "output_cost_per_reasoning_token")]
    pub reasoning: Option<f64>,
}

impl Price {
    /// What `tokens` cost, or `None` when the call reports no tokens or a rate it needs is
    /// missing.
    pub fn cost(&self, tokens: &Tokens) -> Option<f64> {
        if tokens.input.is_none() && tokens.output.is_none() {
            return None;
        }
        let input = tokens.input.unwrap_or(0);
        let output = tokens.output.unwrap_or(0);
        let cache_read = tokens.cache_read.unwrap_or(0).min(input);
        let cache_write = tokens.cache_write.unwrap_or(0).min(input - cache_read);
        let reasoning = tokens.reasoning.unwrap_or(0).min(output);
        let mut cost = 0.0;
        let mut add = |count: i64, rate: Option<f64>| -> Option<()> {
            if count > 0 {
                cost += count as f64 * rate?;
            }
            Some(())
        };
        add(input - cache_read - cache_write, self.input)?;
        add(cache_read, self.cache_read.or(self.input))?;
        add(cache_write, self.cache_write.or(self.input))?;
        add(output - reasoning, self.output)?;
        add(reasoning, self.reasoning.or(self.output))?;
        Some(cost)
    }
}

/// A cost and the entry it was computed with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Priced<'a> {
    pub key: &'a str,
    pub cost: f64,
}

/// One entry of a LiteLLM-format file.
#[derive(Debug, Deserialize)]
struct Entry {
    litellm_provider: Option<String>,
    #[serde(flatten)]
    price: Price,
}

/// A model's entry, under its model name.
#[derive(Debug, Clone)]
struct Model {
    /// The file's key: `gpt-4o-mini`, `azure/gpt-4o-mini`.
    key: Box<str>,
    provider: Box<str>,
    /// Keyed by the model name alone: the provider's own entry (`gpt-4o-mini` is OpenAI's,
    /// `azure/gpt-4o-mini` Azure's), the one a call of an unlisted provider is priced by.
    home: bool,
    price: Price,
}

/// A price table.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    /// By lowercase model name (the key after its provider's prefix).
    models: HashMap<Box<str>, Vec<Model>>,
}

/// A price file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a LiteLLM model price file: {0}")]
pub struct PriceFileError(#[from] serde_json::Error);

impl Prices {
    /// The table otelephant ships.
    ///
    /// # Panics
    /// Never: the shipped file is checked by a test.
    pub fn shipped() -> Prices {
        Prices::parse(SHIPPED).expect("the shipped price table parses")
    }

    /// A table in LiteLLM's format: an object of entries keyed by model (`provider/model` for
    /// most providers' own), each with `litellm_provider` and per-token prices. Entries with
    /// no per-token price (images, audio, the file's `sample_spec`) are left out.
    ///
    /// # Errors
    /// [`PriceFileError`] when the text is not such an object.
    pub fn parse(text: &str) -> Result<Prices, PriceFileError> {
        let entries: HashMap<String, serde_json::Value> = serde_json::from_str(text)?;
        let mut prices = Prices::default();
        for (key, entry) in entries {
            let Ok(entry) = serde_json::from_value::<Entry>(entry) else { continue };
            let Some(provider) = entry.litellm_provider else { continue };
            if entry.price.input.is_none() && entry.price.output.is_none() {
                continue;
            }
            let name = key.strip_prefix(&provider).and_then(|k| k.strip_prefix('/')).unwrap_or(&key);
            if name.contains('/') {
                continue;
            }
            let model = Model {
                home: name == key,
                key: key.as_str().into(),
                provider: provider.into(),
                price: entry.price,
            };
            prices.insert(&name.to_lowercase(), model);
        }
        Ok(prices)
    }

    fn insert(&mut self, name: &str, model: Model) {
        let models = self.models.entry(name.into()).or_default();
        models.retain(|m| m.key != model.key);
        models.push(model);
        models.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// This table with `other`'s entries added, replacing those of the same key.
    #[must_use]
    pub fn overridden_by(mut self, other: Prices) -> Prices {
        for (name, models) in other.models {
            for model in models {
                self.insert(&name, model);
            }
        }
        self
    }

    /// How many models the table prices.
    pub fn len(&self) -> usize {
        self.models.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The entry that prices `model` of `provider` (a span's provider name, any convention's):
    /// the provider's own entry for the model, else the model's home entry; tried with the model
    /// as named (a gateway's `openai/` prefix left off), then without a date suffix
    /// (`gpt-4o-mini-2024-07-18`, `claude-3-5-sonnet@20240620`).
    pub fn find(&self, provider: Option<&str>, model: &str) -> Option<(&str, &Price)> {
        let lower = model.trim().to_lowercase();
        let model = lower.rsplit('/').next().unwrap_or(&lower);
        let families = provider.map(families).unwrap_or(&[]);
        for name in [Some(model), undated(model)].into_iter().flatten() {
            let Some(models) = self.models.get(name) else { continue };
            let found = models
                .iter()
                .find(|m| families.iter().any(|f| m.provider.starts_with(f)))
                .or_else(|| models.iter().find(|m| m.home));
            if let Some(found) = found {
                return Some((&found.key, &found.price));
            }
        }
        None
    }
}

/// The LiteLLM providers (prefixes of `litellm_provider`) a span's provider name means, by the
/// names the GenAI conventions (new and old), OpenInference and OpenLLMetry use.
fn families(provider: &str) -> &'static [&'static str] {
    match provider.to_ascii_lowercase().as_str() {
        "openai" => &["openai", "text-completion-openai"],
        "anthropic" => &["anthropic"],
        "aws.bedrock" | "bedrock" | "aws" | "amazon" => &["bedrock"],
        "azure.ai.openai" | "az.ai.openai" | "azure" | "azure_openai" => &["azure"],
        "azure.ai.inference" | "az.ai.inference" => &["azure_ai"],
        "gcp.gemini" | "gemini" | "google" | "google_genai" => &["gemini"],
        "gcp.vertex_ai" | "vertex_ai" | "vertexai" | "gcp.gen_ai" => &["vertex_ai"],
        "cohere" => &["cohere"],
        "mistral_ai" | "mistralai" | "mistral" => &["mistral"],
        "groq" => &["groq"],
        "deepseek" => &["deepseek"],
        "x_ai" | "xai" => &["xai"],
        "perplexity" => &["perplexity"],
        "ibm.watsonx.ai" | "watsonx" => &["watsonx"],
        "together_ai" | "together" | "togetherai" => &["together_ai"],
        "fireworks_ai" | "fireworks" => &["fireworks_ai"],
        "ollama" => &["ollama"],
        "openrouter" => &["openrouter"],
        _ => &[],
    }
}

/// `model` without its date suffix: `-2024-07-18`, `-20241022`, `@20240620`.
fn undated(model: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((name, date)) = model.rsplit_once('@') {
        return digits(date).then_some(name);
    }
    let bytes = model.as_bytes();
    let n = bytes.len();
    // -YYYY-MM-DD
    if n > 11 && bytes[n - 11] == b'-' && bytes[n - 6] == b'-' && bytes[n - 3] == b'-' {
        let (y, m, d) = (&model[n - 10..n - 6], &model[n - 5..n - 3], &model[n - 2..]);
        if digits(y) && digits(m) && digits(d) {
            return Some(&model[..n - 11]);
        }
    }
    // -YYYYMMDD
    if n > 9 && bytes[n - 9] == b'-' && digits(&model[n - 8..]) {
        return Some(&model[..n - 9]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: i64, output: i64) -> Tokens {
        Tokens { input: Some(input), output: Some(output), ..Tokens::default() }
    }

    #[test]
    fn the_shipped_table_parses_and_prices_the_common_models() {
        let prices = Prices::shipped();
        assert!(prices.len() > 1000, "{} models", prices.len());
        for (provider, model) in [
            ("openai", "gpt-4o-mini"),
            ("openai", "gpt-4o"),
            ("anthropic", "claude-sonnet-4-5-20250929"),
            ("gcp.gemini", "gemini-2.5-flash"),
            ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
            ("mistral_ai", "mistral-large-latest"),
        ] {
            let (_, price) =
                prices.find(Some(provider), model).unwrap_or_else(|| panic!("{provider} {model}"));
            assert!(price.input.is_some_and(|p| p > 0.0) && price.output.is_some_and(|p| p > 0.0), "{model}");
        }
    }

    #[test]
    fn a_model_is_found_by_provider_dated_variant_gateway_prefix_and_case() {
        let prices = Prices::parse(
            r#"{
                "m-1": {"litellm_provider": "openai", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
                "azure/m-1": {"litellm_provider": "azure", "input_cost_per_token": 3e-6, "output_cost_per_token": 4e-6},
                "azure/eu/m-1": {"litellm_provider": "azure", "input_cost_per_token": 9e-6, "output_cost_per_token": 9e-6},
                "c-3": {"litellm_provider": "anthropic", "input_cost_per_token": 5e-6, "output_cost_per_token": 6e-6},
                "img": {"litellm_provider": "openai", "output_cost_per_image": 0.04},
                "sample_spec": {"litellm_provider": "one of", "mode": "chat"}
            }"#,
        )
        .expect("parses");
        assert_eq!(prices.len(), 3, "images, regional entries and the sample are left out");
        let key = |provider, model| prices.find(provider, model).map(|(k, _)| k.to_owned());
        assert_eq!(key(Some("openai"), "m-1").as_deref(), Some("m-1"));
        assert_eq!(key(Some("az.ai.openai"), "m-1").as_deref(), Some("azure/m-1"));
        assert_eq!(key(Some("azure.ai.openai"), "M-1-2024-07-18").as_deref(), Some("azure/m-1"));
        assert_eq!(key(None, "m-1").as_deref(), Some("m-1"), "no provider: the home entry");
        assert_eq!(key(Some("someone"), "openai/m-1").as_deref(), Some("m-1"), "a gateway's prefix");
        assert_eq!(key(Some("anthropic"), "c-3-20241022").as_deref(), Some("c-3"));
        assert_eq!(key(Some("gcp.vertex_ai"), "c-3@20240620").as_deref(), Some("c-3"));
        assert_eq!(key(Some("openai"), "m-2"), None);
        assert_eq!(key(Some("openai"), "m-1-preview"), None);
    }

    #[test]
    fn cached_written_and_reasoning_tokens_are_priced_at_their_own_rates_inside_input_and_output() {
        let price = Price {
            input: Some(1.0),
            output: Some(10.0),
            cache_read: Some(0.1),
            cache_write: Some(1.25),
            reasoning: Some(20.0),
        };
        let all = Tokens {
            input: Some(1000),
            output: Some(300),
            cache_read: Some(600),
            cache_write: Some(100),
            reasoning: Some(100),
        };
        // 300 plain input, 600 cached, 100 written; 200 plain output, 100 reasoning.
        assert_eq!(price.cost(&all), Some(300.0 + 60.0 + 125.0 + 2000.0 + 2000.0));
        let plain = Price { input: Some(1.0), output: Some(10.0), ..Price::default() };
        assert_eq!(plain.cost(&all), Some(1000.0 + 3000.0), "no own rates: the plain ones");
        assert_eq!(plain.cost(&tokens(5, 0)), Some(5.0));
        assert_eq!(plain.cost(&Tokens::default()), None, "no tokens, no cost");
        let embedding = Price { input: Some(1.0), ..Price::default() };
        assert_eq!(embedding.cost(&tokens(7, 0)), Some(7.0));
        assert_eq!(embedding.cost(&tokens(7, 1)), None, "output tokens with no output rate");
        // More cached than input (a provider counting them apart) is held to the input.
        let odd = Tokens { input: Some(10), output: Some(0), cache_read: Some(50), ..Tokens::default() };
        assert_eq!(price.cost(&odd), Some(1.0));
    }

    #[test]
    fn a_users_file_replaces_and_adds_entries() {
        let user = Prices::parse(
            r#"{"gpt-4o-mini": {"litellm_provider": "openai", "input_cost_per_token": 1, "output_cost_per_token": 1},
                "house-model": {"litellm_provider": "openai", "input_cost_per_token": 2, "output_cost_per_token": 3}}"#,
        )
        .expect("parses");
        let prices = Prices::shipped().overridden_by(user);
        let price = |model| prices.find(Some("openai"), model).map(|(_, p)| p.cost(&tokens(1, 1)));
        assert_eq!(price("gpt-4o-mini"), Some(Some(2.0)));
        assert_eq!(price("house-model"), Some(Some(5.0)));
        assert!(Prices::parse("[1, 2]").is_err());
    }
}
