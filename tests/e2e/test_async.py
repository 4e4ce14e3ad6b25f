"""Concurrent calls with AsyncOpenAI: each answer belongs to its request."""
import asyncio

import gw

MODELS = list(gw.CHAT_MODELS)
UPSTREAM = {m: (v[1], v[2]) for m, v in gw.CHAT_MODELS.items()}


def test_16_concurrent_chats(gateway):
    async def main():
        client = gateway.async_client()
        tokens = [gw.nonce(f"async{i}") for i in range(16)]

        async def one(i, token):
            model = MODELS[i % len(MODELS)]
            # A little provider latency so the calls really overlap.
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": token}],
                extra_headers={"x-mock-behavior": "stall=150"})
            return model, token, raw.headers, raw.parse()

        t0 = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
        elapsed = asyncio.get_running_loop().time() - t0
        await client.close()
        return results, elapsed

    results, elapsed = asyncio.run(main())
    assert len(results) == 16
    for model, token, headers, comp in results:
        prov, upstream = UPSTREAM[model]
        assert headers["x-llm-model"] == upstream
        assert comp.choices[0].message.content == \
            f"Hello from the mock {prov} model {upstream}. You said: {token}"
    # 16 x 150 ms serially would be 2.4 s.
    assert elapsed < 2.0, elapsed


def test_concurrent_streams(gateway):
    async def main():
        client = gateway.async_client()
        tokens = [gw.nonce(f"astream{i}") for i in range(8)]

        async def one(token):
            stream = await client.chat.completions.create(
                model="qwen2.5-7b", messages=[{"role": "user", "content": token}], stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-mock-behavior": "drip=20"})
            text, usage = "", None
            async for c in stream:
                if c.choices:
                    text += c.choices[0].delta.content or ""
                usage = c.usage or usage
            return token, text, usage

        out = await asyncio.gather(*(one(t) for t in tokens))
        await client.close()
        return out

    for token, text, usage in asyncio.run(main()):
        assert text == f"Hello from the mock vllm model Qwen/Qwen2.5-7B-Instruct. You said: {token}"
        assert usage is not None and usage.total_tokens > 0
