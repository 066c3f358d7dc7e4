"""The image policy over chat-shaped messages: what is refused (with ``param``), what
reaches the agent, and the marker that replaces earlier turns' images."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from chatcompat.errors import InvalidImage
from chatcompat.images import IMAGE_MARKER
from chatcompat.images import check_images
from chatcompat.images import mark_earlier_images
from chatcompat.settings import AgentConfig
from chatcompat.settings import ImagePolicy
from tests.conftest import AUTH
from tests.image_server import PNG
from tests.image_server import SVG
from tests.wire import check_error

POLICY = ImagePolicy()
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"


def data_uri(data: bytes, header: str = "image/png;base64") -> str:
    return f"data:{header}," + base64.b64encode(data).decode()


def image(url, form="object"):
    return {"type": "image_url", "image_url": {"url": url} if form == "object" else url}


def turn(*parts, role="user"):
    return {"role": role, "content": [{"type": "text", "text": "look"}, *parts]}


def refused(messages, policy=POLICY, **kwargs) -> InvalidImage:
    with pytest.raises(InvalidImage) as caught:
        check_images(messages, policy, **kwargs)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_image"
    return caught.value


def test_data_uri_is_decoded_and_typed_by_its_bytes():
    (got,) = check_images([turn(image(PNG_URI))], POLICY)
    assert (got.data, got.mime_type, got.url) == (PNG, "image/png", None)
    assert got.param == "messages[0].content[1].image_url.url"


def test_bytes_are_kept_only_when_asked():
    (got,) = check_images([turn(image(PNG_URI))], POLICY, with_bytes=False)
    assert (got.data, got.mime_type) == (None, "image/png")


def test_claimed_type_is_not_trusted():
    # JPEG bytes labelled PNG: the bytes decide.
    (got,) = check_images([turn(image(data_uri(JPEG)))], POLICY)
    assert got.mime_type == "image/jpeg"
    # PDF bytes labelled PNG, SVG labelled PNG: refused.
    for data in (b"%PDF-1.7\n%...", SVG):
        error = refused([turn(image(data_uri(data)))])
        assert "no image of a known type" in error.message


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("   ", "blank"),
        ("data:image/png," + "iVBORw0KGgo=", "must be base64"),
        ("data:image/png;base64", "must be base64"),
        ("data:image/png;base64,", "no data"),
        ("data:image/png;base64,not*base64!", "not valid base64"),
        ("data:image/png;base64,iVBORw0KGgo", "not valid base64"),  # bad padding
        ("data:image/svg+xml;base64," + base64.b64encode(SVG).decode(), "'image/svg+xml'"),
        ("data:application/pdf;base64,JVBERi0xLjc=", "'application/pdf'"),
        ("ftp://example.com/a.png", "neither a base64 data URI nor an http(s) URL"),
        ("not a url", "neither"),
        ("https://", "neither"),
        ("https://exa mple.com/a.png", "neither"),
        ("https://example.com:99999/a.png", "neither"),
        ("http://[1.2.3.4]/a.png", "neither"),  # urlsplit: no IPv4 in brackets
        ("http://[example.com]/a.png", "neither"),
        ("https://user:pw@example.com/a.png", "credentials"),
        ("https://example.com/a.png", "images.allowUrl is off"),
    ],
)
def test_refusals_name_the_part(url, words):
    messages = [{"role": "system", "content": "s"}, turn(image(PNG_URI), image(url))]
    error = refused(messages)
    assert words in error.message
    assert error.param == "messages[1].content[2].image_url.url"


HOST_OR_PORT = "host is neither a valid host name nor an IP address"


@pytest.mark.parametrize(
    "url",
    ["http://<script>/a.png", "http://a..b/a.png", "http://-/a.png", "http://-a.example/x",
     "http://a-.example/x", "http://a_b.example/x", "http://%65xample.com/x", "http://..//x",
     "http://x:0/a.png", "http://x:/a.png", "http://[::1]:/a.png", "http://[::1]:0/x",
     "http://" + "a" * 64 + ".example/x", "http://" + ".".join(["a" * 63] * 4) + "/x",
     "https://exa\u00admple\u200b..com/x"],
)  # fmt: skip
def test_malformed_hosts_and_ports_are_refused(url):
    open_urls = dataclasses.replace(POLICY, allow_url=True)
    error = refused([{"role": "system", "content": "s"}, turn(image(url))], open_urls)
    assert error.param == "messages[1].content[1].image_url.url"
    assert HOST_OR_PORT in error.message


@pytest.mark.parametrize(
    "url",
    ["http://example.com/a.png", "http://EXAMPLE.com./a.png", "http://x:1/a", "http://x:65535/a",
     "http://1.2.3.4/a", "http://[2606:4700::1111]:8443/a", "http://a-b.c-d.example/a",
     "http://2130706433/a", "http://xn--bcher-kva.example/a", "http://b\u00fccher.example/a",
     "http://" + ".".join(["a" * 63] * 3 + ["b" * 61]) + "/x"],
)  # fmt: skip
def test_well_formed_hosts_and_ports_pass(url):
    open_urls = dataclasses.replace(POLICY, allow_url=True)
    (got,) = check_images([turn(image(url))], open_urls)
    assert got.url == url


def test_string_form_param_has_no_url_suffix():
    error = refused([turn(image(" ", form="string"))])
    assert error.param == "messages[0].content[1].image_url"


def test_size_limit_checked_before_and_after_decoding():
    policy = dataclasses.replace(POLICY, max_bytes=len(PNG))
    assert check_images([turn(image(PNG_URI))], policy)
    error = refused([turn(image(data_uri(PNG + b"\0")))], policy)
    assert f"larger than {len(PNG)} bytes" in error.message
    huge = "data:image/png;base64," + "A" * 4_000_000
    assert "larger than" in refused([turn(image(huge))], policy).message


def test_at_most_max_parts_images():
    assert len(check_images([turn(*[image(PNG_URI)] * 8)], POLICY)) == 8
    error = refused([turn(*[image(PNG_URI)] * 9)])
    assert "at most 8 image parts" in error.message
    assert error.param == "messages[0].content[9].image_url.url"  # the ninth image
    none = dataclasses.replace(POLICY, max_parts=0)
    assert "at most 0" in refused([turn(image(PNG_URI))], none).message


def test_total_bytes_are_capped():
    policy = dataclasses.replace(POLICY, max_total_bytes=2 * len(PNG))
    assert len(check_images([turn(image(PNG_URI), image(PNG_URI))], policy)) == 2
    error = refused([turn(image(PNG_URI), image(PNG_URI), image(PNG_URI))], policy)
    assert "images.maxTotalBytes" in error.message
    assert error.param == "messages[0].content[3].image_url.url"


def test_allowed_types_are_the_policys():
    only_png = dataclasses.replace(POLICY, allowed_mimes=("image/png",))
    error = refused([turn(image(data_uri(JPEG, "image/jpeg;base64")))], only_png)
    assert "'image/jpeg' is not taken" in error.message
    error = refused([turn(image(data_uri(JPEG)))], only_png)  # JPEG bytes labelled PNG
    assert "an image/jpeg image" in error.message
    # A charset parameter, a jpg alias and no claimed type at all are fine.
    jpeg = dataclasses.replace(POLICY, allowed_mimes=("image/jpeg",))
    for header in ("image/jpeg;charset=utf-8;base64", "image/JPG;base64", ";base64"):
        (got,) = check_images([turn(image(data_uri(JPEG, header)))], jpeg)
        assert got.mime_type == "image/jpeg"


def test_remote_urls_with_allow_url_and_allowlist():
    open_urls = dataclasses.replace(POLICY, allow_url=True)
    (got,) = check_images([turn(image("https://any.example.org/a.png"))], open_urls)
    assert (got.url, got.data) == ("https://any.example.org/a.png", None)
    listed = dataclasses.replace(open_urls, url_allowlist=("cdn.example.com", "*.img.example"))
    for url in ("https://cdn.example.com/a.png", "http://a.img.example:8080/b"):
        assert check_images([turn(image(url))], listed)
    for url in ("https://evil.example.com/a.png", "https://img.example/a.png"):
        error = refused([turn(image(url))], listed)
        assert "images.urlAllowlist" in error.message


def test_earlier_turns_images_are_not_checked_with_the_marker():
    bad_earlier = [
        turn(image("   ")),
        {"role": "assistant", "content": "ok"},
        turn(image(PNG_URI)),
    ]
    (got,) = check_images(bad_earlier, POLICY)
    assert got.param == "messages[2].content[1].image_url.url"
    keep = dataclasses.replace(POLICY, history="keep")
    assert refused(bad_earlier, keep).param == "messages[0].content[1].image_url.url"


def test_earlier_images_count_with_keep_but_only_new_ones_are_returned():
    keep = dataclasses.replace(POLICY, history="keep", max_parts=2)
    messages = [turn(image(PNG_URI)), {"role": "assistant", "content": "ok"}, turn(image(PNG_URI))]
    (got,) = check_images(messages, keep)
    assert got.param == "messages[2].content[1].image_url.url"
    messages[2] = turn(image(PNG_URI), image(PNG_URI))
    assert "at most 2" in refused(messages, keep).message


def test_every_message_of_the_new_turn_is_checked():
    messages = [
        {"role": "assistant", "content": "ok"},
        {"role": "tool", "tool_call_id": "c1", "content": [image("x")]},
        turn(image(PNG_URI)),
    ]
    assert refused(messages).param == "messages[1].content[0].image_url.url"


def test_system_images_are_not_looked_at():
    messages = [{"role": "system", "content": [image(" ")]}, turn()]
    assert check_images(messages, POLICY) == ()


def test_param_prefix_and_param_for():
    error = refused([turn(image(" "))], param_prefix="input")
    assert error.param == "input[0].content[1].image_url.url"
    error = refused([turn(image(" "))], param_for=lambda i, j: f"input[{i}].content[{j}].x")
    assert error.param == "input[0].content[1].x"


def test_marker_replaces_earlier_images_without_changing_them():
    history = [turn(image(PNG_URI)), {"role": "assistant", "content": "a png"}]
    marked = mark_earlier_images(history, POLICY, always=False, new_turn=[])
    assert marked[0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "text", "text": IMAGE_MARKER},
    ]
    assert marked[1] is history[1]
    assert history[0]["content"][1]["type"] == "image_url"  # the stored copy is untouched
    keep = dataclasses.replace(POLICY, history="keep")
    assert mark_earlier_images(history, keep, always=False, new_turn=[]) is history
    assert mark_earlier_images(history, keep, always=True, new_turn=[])[0]["content"][1][
        "text"
    ] == (IMAGE_MARKER)


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL_STEP = {"role": "assistant", "content": None, "tool_calls": [CALL]}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": "42"}


@pytest.mark.parametrize(
    "step", [TOOL_STEP, {**TOOL_STEP, "content": "let me look"},
             {"role": "assistant", "content": None, "function_call": CALL["function"]}],
)  # fmt: skip
def test_tool_calls_and_their_results_do_not_end_the_users_turn(step):
    result = RESULT if "tool_calls" in step else {"role": "function", "name": "f", "content": "1"}
    messages = [turn(image(PNG_URI)), step, {"role": "system", "content": "s"}, result]
    (got,) = check_images(messages, POLICY)  # the user's image is the current turn's
    assert got.param == "messages[0].content[1].image_url.url"
    messages[0] = turn(image(" "))  # so it is checked as one
    assert refused(messages).param == "messages[0].content[1].image_url.url"
    assert (
        mark_earlier_images(messages[:2], POLICY, always=False, new_turn=messages[2:])
        == (messages[:2])
    )


def test_an_answer_still_ends_the_turn_before_a_tool_loop():
    messages = [turn(image(" ")), {"role": "assistant", "content": "ok"},
                turn(image(PNG_URI)), TOOL_STEP, RESULT, TOOL_STEP, RESULT]  # fmt: skip
    (got,) = check_images(messages, POLICY)
    assert got.param == "messages[2].content[1].image_url.url"
    marked = mark_earlier_images(messages[:6], POLICY, always=True, new_turn=messages[6:])
    assert marked[0]["content"][1] == {"type": "text", "text": IMAGE_MARKER}
    assert marked[2:] == messages[2:6]


def test_tool_calls_without_their_results_end_the_turn():
    # The client answered the calls with a new message instead: a new turn.
    messages = [turn(image(" ")), TOOL_STEP, turn(image(PNG_URI))]
    (got,) = check_images(messages, POLICY)
    assert got.param == "messages[2].content[1].image_url.url"
    marked = mark_earlier_images(messages[:2], POLICY, always=False, new_turn=messages[2:])
    assert marked[0]["content"][1] == {"type": "text", "text": IMAGE_MARKER}


# -- through the view (Flask test client), an openai agent against the fake upstream --------


@pytest.fixture
def gateway(make_app, fake):
    up = {"baseUrl": fake.base_url, "model": "fake-model", "apiKey": "sk-images-0123456789"}
    agents = (
        AgentConfig(id="up", backend="openai", default=True, options=up),
        AgentConfig(
            id="keep",
            backend="openai",
            options=up,
            images=ImagePolicy(history="keep", allow_url=True, url_allowlist=("cdn.example.com",)),
        ),  # fmt: skip
        AgentConfig(id="echo", backend="echo", images=ImagePolicy(max_parts=1)),
    )
    return make_app(agents=agents, default_agent_id="up", responses_enabled=True).test_client()


def post(client, messages, model="openclaw", headers=None):
    body = {"model": model, "messages": messages}
    return client.post("/v1/chat/completions", json=body, headers={**AUTH, **(headers or {})})


def sent_parts(fake) -> list[list]:
    """The content of each message of the upstream's last request (strings as is)."""
    return [m.get("content") for m in fake.chat_requests()[-1].body["messages"]]


def test_view_refuses_with_param_before_the_agent_runs(gateway, fake):
    response = post(gateway, [{"role": "system", "content": "s"}, turn(image(" "))])
    assert response.status_code == 400
    error = check_error(response.get_json(), code="invalid_image")
    assert error["param"] == "messages[1].content[1].image_url.url"
    assert fake.chat_requests() == []


def test_view_policy_is_the_routed_agents(gateway, fake):
    two = [turn(image(PNG_URI), image(PNG_URI))]
    assert post(gateway, two).status_code == 200  # "up": the default 8 parts
    response = post(gateway, two, model="openclaw/echo")  # "echo": maxParts 1
    assert check_error(response.get_json(), code="invalid_image")["param"] == (
        "messages[0].content[2].image_url.url"
    )
    url = [turn(image("https://cdn.example.com/a.png"))]
    assert post(gateway, url).status_code == 400  # allowUrl off
    assert post(gateway, url, model="openclaw/keep").status_code == 200
    assert sent_parts(fake)[-1][1] == image("https://cdn.example.com/a.png")  # not fetched


def test_view_earlier_images_become_the_marker_and_the_store_keeps_them(gateway, fake):
    first = post(gateway, [turn(image(PNG_URI))], headers={"x-openclaw-session-key": "im1"})
    assert first.status_code == 200
    assert sent_parts(fake)[-1][1] == image(PNG_URI)  # the new turn's image goes as sent
    second = post(gateway, [turn()], headers={"x-openclaw-session-key": "im1"})
    assert second.status_code == 200
    history_user = sent_parts(fake)[0]  # the stored user turn, then its reply, the new turn
    assert history_user == [{"type": "text", "text": "look"},
                            {"type": "text", "text": IMAGE_MARKER}]  # fmt: skip
    store = gateway.application.extensions["chatcompat"].store
    stored_first = store.transcript(second.headers["x-openclaw-session-key"])[0].messages[0]
    assert stored_first["content"][1] == image(PNG_URI)  # stored as sent
    # A new session's own earlier messages too.
    messages = [turn(image(PNG_URI)), {"role": "assistant", "content": "a dot"}, turn()]
    assert post(gateway, messages).status_code == 200
    assert sent_parts(fake)[0][1] == {"type": "text", "text": IMAGE_MARKER}


def test_view_keep_sends_earlier_images_again(gateway, fake):
    messages = [turn(image(PNG_URI)), {"role": "assistant", "content": "a dot"}, turn()]
    assert post(gateway, messages, model="openclaw/keep").status_code == 200
    assert sent_parts(fake)[0][1] == image(PNG_URI)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def test_view_a_tool_loop_keeps_the_users_images_stateless(gateway, fake):
    calls = [{"id": "call_w1", "type": "function",
              "function": {"name": "get_weather", "arguments": "{}"}}]  # fmt: skip
    messages = [turn(image(PNG_URI)), {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}]  # fmt: skip
    body = {"model": "openclaw", "messages": messages, "tools": TOOLS}
    response = gateway.post("/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200, response.get_json()
    assert sent_parts(fake)[0][1] == image(PNG_URI)  # not the marker: the turn goes on


def test_view_a_tool_loop_keeps_the_users_images_in_a_session(gateway, fake):
    headers = {**AUTH, "x-openclaw-session-key": "loop1"}
    first = [{"role": "user", "content": [{"type": "text", "text": "weather? [[tools]]"},
                                          image(PNG_URI)]}]  # fmt: skip
    body = {"model": "openclaw", "messages": first, "tools": TOOLS}
    answer = gateway.post("/v1/chat/completions", headers=headers, json=body)
    assert answer.get_json()["choices"][0]["finish_reason"] == "tool_calls"
    results = [{"role": "tool", "tool_call_id": call["id"], "content": "ok"}
               for call in answer.get_json()["choices"][0]["message"]["tool_calls"]]  # fmt: skip
    body = {"model": "openclaw", "messages": results, "tools": TOOLS}
    again = gateway.post("/v1/chat/completions", headers=headers, json=body)
    assert again.status_code == 200, again.get_json()
    assert sent_parts(fake)[0][1] == image(PNG_URI)  # the stored user turn, image as sent


def test_view_responses_function_call_items_keep_the_users_images(gateway, fake):
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": PNG_URI}]},
        {"type": "function_call", "call_id": "call_w1", "name": "get_weather",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_w1", "output": "sunny"},
    ]  # fmt: skip
    tools = [{"type": "function", "name": "get_weather", "parameters": {}}]
    response = gateway.post("/v1/responses", headers=AUTH,
                            json={"model": "openclaw", "input": items, "tools": tools})  # fmt: skip
    assert response.status_code == 200, response.get_json()
    assert sent_parts(fake)[0][1] == image(PNG_URI)
    # And it is checked as the current turn's: an SVG there is refused, naming the part.
    svg = "data:image/svg+xml;base64," + base64.b64encode(SVG).decode()
    items[0]["content"][1]["image_url"] = svg
    response = gateway.post("/v1/responses", headers=AUTH,
                            json={"model": "openclaw", "input": items, "tools": tools})  # fmt: skip
    assert check_error(response.get_json(), code="invalid_image")["param"] == (
        "input[0].content[1].image_url"
    )
