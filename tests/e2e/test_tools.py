"""Tools, n, response_format through the gateway."""
import json

import openai
import pytest

import gw

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string",
                                                                "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize("model", ["gpt-4o", "azure-gpt-4o-mini", "qwen2.5-7b", "claude-haiku-4-5"])
def test_tool_call_round_trip(gateway, mock, model):
    client = gateway.client()
    token = gw.nonce("tool")
    messages = [{"role": "user", "content": f"What is the weather in Paris? {token}"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args["city"], str)
    upstream = json.loads(mock.find_one(token)["body"])
    if model.startswith("claude"):
        fn = WEATHER["function"]
        assert upstream["tools"] == [{"name": fn["name"], "description": fn["description"],
                                      "input_schema": fn["parameters"]}]
    else:
        assert upstream["tools"] == [WEATHER]

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id,
                     "content": json.dumps({"temp_c": 21, "sky": "clear", "ref": token})})
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content.startswith("Tool result received:")
    assert token in second.choices[0].message.content
    sent = [json.loads(r["body"]) for r in mock.find(token)]
    assert len(sent) == 2
    if model.startswith("claude"):
        # tool_calls -> tool_use block, the tool message -> tool_result block
        assert sent[1]["messages"][1]["content"][-1]["type"] == "tool_use"
        assert sent[1]["messages"][1]["content"][-1]["id"] == calls[0].id
        assert sent[1]["messages"][2]["content"][0]["type"] == "tool_result"
        assert sent[1]["messages"][2]["content"][0]["tool_use_id"] == calls[0].id
    else:
        assert sent[1]["messages"][1]["tool_calls"][0]["id"] == calls[0].id
        assert sent[1]["messages"][2]["role"] == "tool"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-5"])
def test_tool_call_streamed(gateway, model):
    client = gateway.client()
    token = gw.nonce("toolstream")
    messages = [{"role": "user", "content": f"Weather in Oslo? {token}"}]
    stream = client.chat.completions.create(model=model, messages=messages,
                                            tools=[WEATHER], tool_choice="required", stream=True)
    call_id, name, args, finish = None, "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        for tc in d.tool_calls or []:
            call_id = tc.id or call_id
            if tc.function:
                name += tc.function.name or ""
                args += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert call_id and name == "get_weather"
    assert isinstance(json.loads(args)["city"], str)

    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]})
    messages.append({"role": "tool", "tool_call_id": call_id, "content": f"sunny {token}"})
    text = ""
    for chunk in client.chat.completions.create(model=model, messages=messages,
                                                tools=[WEATHER], stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text.startswith("Tool result received:") and token in text


def test_n_choices(gateway):
    token = gw.nonce("n2")
    comp = gateway.client().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": token}], n=2)
    assert [c.index for c in comp.choices] == [0, 1]
    assert [c.message.content for c in comp.choices] == [
        f"Hello from the mock openai model gpt-4o-mini. You said: {token} (choice {i})"
        for i in (0, 1)]


@pytest.mark.parametrize("model", ["gpt-4o", "claude-haiku-4-5"])
def test_json_object(gateway, model):
    comp = gateway.client().chat.completions.create(
        model=model, response_format={"type": "json_object"},
        messages=[{"role": "system", "content": "Reply in JSON."},
                  {"role": "user", "content": "Give me a JSON object about cats."}])
    assert isinstance(json.loads(comp.choices[0].message.content), dict)


def test_json_schema(gateway):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                       "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    for model in ("gpt-4o-mini", "azure-gpt-4o-mini", "claude-sonnet-4-5"):
        comp = gateway.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "A person."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "strict": True, "schema": schema}})
        v = json.loads(comp.choices[0].message.content)
        assert set(v) == {"name", "age", "tags"}
        assert isinstance(v["name"], str) and isinstance(v["age"], int)
        assert all(isinstance(t, str) for t in v["tags"])


def test_n_choices_unsupported_by_anthropic(gateway):
    """Anthropic cannot give n > 1: a 400 naming the parameter, not one choice."""
    with pytest.raises(openai.BadRequestError) as ei:
        gateway.client().chat.completions.create(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}], n=2)
    assert ei.value.param == "n"
    assert ei.value.code == "unsupported_parameter"
