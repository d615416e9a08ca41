//! The body chat clients POST: the AI SDK's `useCompletion` shape, `{"prompt": "…"}` (other
//! fields it may add are ignored).

use serde::Deserialize;

use crate::platform::error::ApiError;
use crate::platform::input::Prompt;

#[derive(Debug, Deserialize)]
pub struct PromptBody {
    prompt: String,
}

impl PromptBody {
    pub fn into_prompt(self) -> Result<Prompt, ApiError> {
        Prompt::parse(self.prompt)
    }
}
