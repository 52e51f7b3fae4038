//! Chat templates: the Jinja template the GGUF carries (`tokenizer.chat_template`), rendered
//! as-is by minijinja with Python-compatible string methods, the way Hugging Face and
//! llama.cpp render it (`trim_blocks` and `lstrip_blocks` on, `add_generation_prompt`).

use minijinja::{context, Environment, Error, ErrorKind};

/// One chat turn, as templates expect it (`{"role": ..., "content": ...}`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Errors of template rendering.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the model has no chat template (tokenizer.chat_template); use Generate with a raw prompt")]
    NoTemplate,
    #[error("the model's chat template does not compile: {0}")]
    Compile(String),
    #[error("the model's chat template refused the conversation: {0}")]
    Render(String),
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos`/`eos` are the texts templates see as `bos_token`/`eos_token`.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<ChatTemplate, ChatError> {
        let source = source.ok_or(ChatError::NoTemplate)?;
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Compile(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> { Err(Error::new(ErrorKind::InvalidOperation, msg)) });
        env.add_template_owned("chat", source.to_string()).map_err(|e| ChatError::Compile(e.to_string()))?;
        Ok(ChatTemplate { env, bos: bos.to_string(), eos: eos.to_string() })
    }

    /// Renders `messages` followed by the assistant's generation prompt.
    pub fn render(&self, messages: &[Message]) -> Result<String, ChatError> {
        self.render_with(messages, true)
    }

    /// Renders `messages`, with the assistant's generation prompt if asked (without it, the
    /// text is the start of any longer conversation's rendering: the prefix cache's key).
    pub fn render_with(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatError> {
        let template = self.env.get_template("chat").map_err(|e| ChatError::Compile(e.to_string()))?;
        template
            .render(context! {
                messages => minijinja::value::Serde(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos,
                eos_token => &self.eos,
            })
            .map_err(|e| ChatError::Render(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's template (ChatML with a default system prompt), as its GGUF carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }

    #[test]
    fn renders_chatml_with_default_system_prompt() {
        let t = ChatTemplate::new(Some(SMOLLM2), "<|im_start|>", "<|im_end|>").unwrap();
        let out = t.render(&[msg("user", "Hi")]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let src = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('first message must be from the user') }}{% endif %}{% for m in messages %}[{{ m['content'].strip() | upper }}]{% endfor %}";
        let t = ChatTemplate::new(Some(src), "", "").unwrap();
        assert_eq!(t.render(&[msg("user", "  a b  ")]).unwrap(), "[A B]");
        let err = t.render(&[msg("assistant", "x")]).unwrap_err();
        assert!(err.to_string().contains("first message must be from the user"), "{err}");
    }

    #[test]
    fn missing_template_is_a_clear_error() {
        assert!(matches!(ChatTemplate::new(None, "", ""), Err(ChatError::NoTemplate)));
    }
}
