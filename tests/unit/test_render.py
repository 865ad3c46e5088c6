from bot.community.markdown import code_span, escape_markdown, mention
from bot.matrix.render import edit_content, markdown_to_html, message_content


def test_markdown_renders_to_allowed_html():
    assert markdown_to_html("**bold** and `code`") == "<strong>bold</strong> and <code>code</code>"
    html = markdown_to_html("- a\n- b")
    assert html == "<ul>\n<li>a</li>\n<li>b</li>\n</ul>"


def test_raw_html_in_markdown_is_shown_not_interpreted():
    html = markdown_to_html('<script>alert(1)</script><img src=x onerror="x()">')
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_dangerous_links_are_removed():
    html = markdown_to_html("[click](javascript:alert(1)) [ok](https://example.org)")
    assert 'href="javascript' not in html and '<a href="javascript' not in html
    assert '<a href="https://example.org" rel="noopener noreferrer">ok</a>' in html


def test_hostile_display_name_is_escaped_in_a_mention():
    name = "<b>Evil</b> **loud** [x](https://evil.example) @room"
    content = message_content(
        f"Welcome {mention('@evil:example.org', name)}!", mentions=("@evil:example.org",)
    )
    html = content["formatted_body"]
    assert "<b>" not in html and "<strong>" not in html
    assert 'href="https://evil.example"' not in html
    assert html.startswith('Welcome <a href="https://matrix.to/#/@evil:example.org"')
    assert "&lt;b&gt;Evil&lt;/b&gt; **loud** [x](https://evil.example) @room" in html
    assert content["body"] == "Welcome <b>Evil</b> **loud** [x](https://evil.example) @room!"
    assert content["m.mentions"] == {"user_ids": ["@evil:example.org"]}


def test_escape_markdown_flattens_newlines_and_escapes_markup():
    assert escape_markdown("a\n# b") == "a \\# b"
    assert markdown_to_html(escape_markdown("_x_ `y` <z>")) == "_x_ `y` &lt;z&gt;"


def test_code_span_survives_backticks():
    assert markdown_to_html(code_span("!x`y")) == "<code>!x`y</code>"


def test_every_message_declares_its_mentions():
    assert message_content("hi")["m.mentions"] == {}


def test_reply_and_thread_relations():
    reply = message_content("hi", reply_to="$e")
    assert reply["m.relates_to"] == {"m.in_reply_to": {"event_id": "$e"}}
    thread = message_content("hi", reply_to="$e", thread_root="$root")
    assert thread["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": "$e"},
    }


def test_edit_carries_new_content_and_fallback():
    new = message_content("final **answer**")
    edit = edit_content("$orig", new)
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$orig"}
    assert edit["m.new_content"]["formatted_body"] == "final <strong>answer</strong>"
    assert edit["body"] == "* final **answer**"
    assert "m.relates_to" not in edit["m.new_content"]


def test_sanitizer_strips_scripts_handlers_and_bad_schemes():
    from bot.matrix.render import sanitize_html

    cleaned = sanitize_html(
        '<a href="javascript:alert(1)">x</a><img src=x onerror=y><p onclick="z">t</p>'
    )
    assert cleaned == '<a rel="noopener noreferrer">x</a><p>t</p>'
