"""The official OpenAI python client talking to a real uvicorn server on a loopback port."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from yollava.concepts import Concept  # noqa: E402
from yollava.concepts.io import save_concept  # noqa: E402
from yollava import YoLLaVA  # noqa: E402
from yollava.models import load_model  # noqa: E402
from yollava.serve import ServerConfig, create_app  # noqa: E402
from yollava.serve.testing import ServerThread, data_url, jpeg_bytes, one_torch_thread, tiny_recipe  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.mark.slow
def test_openai_client(tiny_model_dirs, tmp_path):
    engine = YoLLaVA(load_model(str(tiny_model_dirs["qwen2_vl"])))  # the other family, for coverage
    train, data = tiny_recipe()
    app = create_app(ServerConfig(model="tiny-qwen", home=tmp_path / "home", train=train, data=data), engine)
    db = app.state.server.db
    key = db.new_key(db.add_user("alice"))
    a = engine.adapter
    save_concept(Concept.initialise("bo", a.embed_tokens.weight, a.lm_head.weight, k=2), tmp_path / "home" / "users" / "1" / "concepts", a.fingerprint())

    with ServerThread(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["tiny-qwen"]

        r = client.chat.completions.create(model="tiny-qwen", messages=[{"role": "user", "content": "What is <bo>?"}], max_tokens=5, temperature=0)
        assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
        assert r.usage.completion_tokens <= 5 and r.choices[0].finish_reason in ("stop", "length")
        text, usage = r.choices[0].message.content, r.usage

        photo = data_url(jpeg_bytes())
        r = client.chat.completions.create(model="tiny-qwen", max_tokens=3, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Is <bo> in this photo?"}, {"type": "image_url", "image_url": {"url": photo}}]}])
        assert isinstance(r.choices[0].message.content, str)

        stream = client.chat.completions.create(model="tiny-qwen", messages=[{"role": "user", "content": "What is <bo>?"}],
                                                max_tokens=5, temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == text
        assert chunks[-1].usage.completion_tokens == usage.completion_tokens and chunks[-1].usage.prompt_tokens == usage.prompt_tokens

        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model="tiny-qwen", messages=[{"role": "user", "content": "Is <rex> here?"}])
        assert "unknown concept <rex>" in e.value.message
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="yk-000000000000-wrong", max_retries=0).models.list()
        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(model="tiny-qwen", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(b"not a photo")}}]}])
