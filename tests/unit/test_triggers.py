from bot.matrix.invites import InvitePolicy
from bot.matrix.triggers import find_trigger

BOT = "@bot:example.org"


def trig(body, **content):
    return find_trigger(
        {"body": body, **content}, prefix="!", bot_user_id=BOT, bot_display_name="Community Bot"
    )


def test_prefix():
    t = trig("!ping")
    assert (t.text, t.prefixed, t.mentioned) == ("ping", True, False)


def test_plain_message_is_not_for_the_bot():
    assert trig("hello everyone") is None


def test_mention_by_display_name_with_or_without_prefix():
    assert trig("Community Bot: ping").text == "ping"
    t = trig("community bot, !help ping")
    assert (t.text, t.prefixed, t.mentioned) == ("help ping", True, True)


def test_mention_by_pill_and_intentional_mentions():
    t = trig(
        "bot: what is up?",
        formatted_body=f'<a href="https://matrix.to/#/{BOT}">bot</a>: what is up?',
    )
    assert t.text == "what is up?" and t.mentioned and not t.prefixed
    t = trig("hey there", **{"m.mentions": {"user_ids": [BOT]}})
    assert t.text == "hey there" and t.mentioned


def test_mention_by_mxid():
    assert trig("@bot:example.org ping").text == "ping"


def test_other_prefix_words_are_not_mentions():
    assert trig("botany is fun") is None


def test_invite_policy():
    policy = InvitePolicy(["@alice:example.org", "trusted.org"], admins=["@root:other.org"])
    assert policy.allows("@alice:example.org")
    assert policy.allows("@anyone:trusted.org")
    assert policy.allows("@root:other.org")
    assert not policy.allows("@mallory:example.org")
    assert not policy.allows("@x:untrusted.org")


def test_pills_in_commands_become_mxids():
    from bot.matrix.triggers import resolve_pills

    content = {
        "body": "!kick Bob Smith being rude",
        "formatted_body": '!kick <a href="https://matrix.to/#/@bob:example.org">Bob Smith</a> being rude',
    }
    assert resolve_pills("kick Bob Smith being rude", content) == "kick @bob:example.org being rude"
    encoded = {
        "formatted_body": '<a href="https://matrix.to/#/%40eve%3Aexample.org?via=x">Eve &amp; co</a>'
    }
    assert resolve_pills("user Eve & co", encoded) == "user @eve:example.org"
    assert resolve_pills("ping", {"body": "!ping"}) == "ping"
