"""Prompt templates shared by training and evaluation, so every algorithm sees exactly the same prompts.

- `paper`: the reference paper's system prompt and suffix, rendered with the model's chat template.
- `plain`: "Problem: ...\\nSolution:" for base models without a chat template (the CPU testbed uses it).
- `raw`: the problem text as is.
"""

from __future__ import annotations

from typing import Any

PAPER_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
PAPER_SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."

TEMPLATES = ("paper", "plain", "raw")


def strip_suffix(problem: str) -> str:
    """Remove the paper's suffix if a data file already appended it (MATH train in verl format does)."""
    return problem[: -len(PAPER_SUFFIX)] if problem.endswith(PAPER_SUFFIX) else problem


def paper_messages(problem: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": PAPER_SYSTEM},
        {"role": "user", "content": strip_suffix(problem) + PAPER_SUFFIX},
    ]


def render_prompt(problem: str, template: str, tokenizer: Any | None = None) -> str:
    """The exact prompt string given to the model (generation continues right after it)."""
    if template == "plain":
        return f"Problem: {strip_suffix(problem)}\nSolution:"
    if template == "raw":
        return problem
    if template == "paper":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "prompt template 'paper' needs a tokenizer with a chat template; "
                "use template 'plain' for base models without one"
            )
        return tokenizer.apply_chat_template(paper_messages(problem), tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r}; choose one of {', '.join(TEMPLATES)}")


# The chat template of Qwen2.5-Math (its tokenizer_config.json `chat_template`, as published with
# Qwen/Qwen2.5-Math-1.5B and -7B), written out here because a Qwen2 tokenizer from elsewhere carries another
# model's template. Its default system message is the paper's system prompt.
QWEN25_MATH_SYSTEM = PAPER_SYSTEM
QWEN25_MATH_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'Please reason step by step, and put your final answer within \\\\boxed{}.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within "
    "\\\\boxed{}.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


def use_qwen25_math_template(tokenizer: Any) -> Any:
    """Give a Qwen2 tokenizer the Qwen2.5-Math chat template; `<|im_end|>` ends a turn (EOS), `<|endoftext|>` pads."""
    tokenizer.chat_template = QWEN25_MATH_CHAT_TEMPLATE
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer
