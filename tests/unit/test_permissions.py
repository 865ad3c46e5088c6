import pytest

from bot.community.permissions import Party, Refused, check_role_change, check_target
from bot.community.roles import Role

BOT = "@bot:x"
ADMIN, MOD, USER = (
    Party("@a:x", Role.ADMIN),
    Party("@m:x", Role.MODERATOR),
    Party("@u:x", Role.USER),
)
OTHER_MOD, OTHER_ADMIN = Party("@m2:x", Role.MODERATOR), Party("@a2:x", Role.ADMIN)


def test_nobody_acts_on_the_bot_or_themselves():
    with pytest.raises(Refused, match="I will not kick myself"):
        check_target(ADMIN, Party(BOT, Role.USER), bot_user_id=BOT, action="kick")
    with pytest.raises(Refused, match="You cannot ban yourself"):
        check_target(MOD, MOD, bot_user_id=BOT, action="ban")


def test_nobody_acts_on_a_higher_rank_but_equal_is_fine():
    with pytest.raises(Refused, match="outranks you"):
        check_target(MOD, ADMIN, bot_user_id=BOT, action="kick")
    check_target(MOD, OTHER_MOD, bot_user_id=BOT, action="kick")
    check_target(MOD, USER, bot_user_id=BOT, action="kick")


def test_nobody_grants_above_their_own_role():
    with pytest.raises(Refused, match="cannot grant admin"):
        check_role_change(
            MOD, USER, Role.ADMIN, bot_user_id=BOT, admins_left=1, configured_admin=False
        )
    check_role_change(
        MOD, USER, Role.MODERATOR, bot_user_id=BOT, admins_left=1, configured_admin=False
    )


def test_demoting_yourself_is_refused_but_the_last_admin_rule_also_holds():
    with pytest.raises(Refused, match="yourself"):
        check_role_change(
            ADMIN, ADMIN, Role.USER, bot_user_id=BOT, admins_left=2, configured_admin=False
        )
    with pytest.raises(Refused, match="last admin"):
        check_role_change(
            OTHER_ADMIN, ADMIN, Role.USER, bot_user_id=BOT, admins_left=1, configured_admin=False
        )
    check_role_change(
        OTHER_ADMIN, ADMIN, Role.USER, bot_user_id=BOT, admins_left=2, configured_admin=False
    )


def test_configured_admins_are_changed_in_the_config_only():
    with pytest.raises(Refused, match=r"\[roles\] admins"):
        check_role_change(
            OTHER_ADMIN,
            ADMIN,
            Role.MODERATOR,
            bot_user_id=BOT,
            admins_left=5,
            configured_admin=True,
        )
