"""Reactor rules: parsing errors name the rule, the bucketed matcher agrees with fnmatch, sandboxed rendering."""
from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings, strategies as st

from eventbus import config
from eventbus.reactor import rules
from eventbus.errors import ConfigError


def rule_set(*globs: str) -> rules.RuleSet:
    return rules.RuleSet(rules.parse([{glob: [{"fire": {"tag": "x"}}]} for glob in globs]))


def test_the_spec_example_parses_with_defaults_filled() -> None:
    parsed = rules.parse([{"myco/deploy/*": [
        {"fire": {"tag": "myco/audit/{{ data.id }}", "data": {"app": "{{ data.app }}"}}},
        {"target": {"glob": "web*", "tag": "myco/restart", "data": {"why": "{{ tag }}"}}},
        {"run": {"argv": ["/usr/bin/logger", "deployed {{ data.app }}"], "timeout": 30}},
        {"post": {"url": "https://hooks.example.com/x", "body": {"tag": "{{ tag }}"}}},
    ]}])
    kinds = [action.kind for action in parsed[0].actions]
    assert kinds == ["fire", "target", "run", "post"]
    run = parsed[0].actions[2].fields
    assert run["timeout"] == 30.0 and run["env"] == {} and run["max_output"] == rules.DEFAULT_MAX_OUTPUT


@pytest.mark.parametrize("value, words", [
    ("not a list", "expected a list"),
    ([{"a/*": [{"explode": {}}]}], "reactor rule 1 ('a/*'), action 1: unknown action 'explode'"),
    ([{"a": [{"fire": {"tag": "x"}}]}, {"b/[x": [{"fire": {"tag": "x"}}]}], "reactor rule 2 ('b/[x'): "
                                                                            "the tag glob has an unclosed '['"),
    ([{"": [{"fire": {"tag": "x"}}]}], "non-empty string"),
    ([{"a/*": [{"fire": {"tag": "{{ data.x "}}]}], "reactor rule 1 ('a/*'), action 1 (fire): template"),
    ([{"a/*": [{"fire": {"data": {}}}]}], "missing field 'tag'"),
    ([{"a/*": [{"run": {"argv": "echo hi"}}]}], "field 'argv' must be a non-empty list"),
    ([{"a/*": [{"run": {"argv": ["x"], "timeout": -1}}]}], "positive number of seconds"),
    ([{"a/*": [{"run": {"argv": ["x"], "shell": True}}]}], "unknown field 'shell'"),
    ([{"a/*": []}], "non-empty list of actions"),
    ([{"a/*": [{"fire": {"tag": "x"}}], "b": []}], "one 'GLOB: [actions]' mapping"),
])
def test_a_bad_rule_is_one_line_naming_it(value: object, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        rules.parse(value, "conf/master")
    message = str(caught.value)
    assert words in message and "\n" not in message and message.startswith("conf/master: ")


def test_the_master_config_carries_typed_rules(tmp_path) -> None:
    path = tmp_path / "master"
    path.write_text("reactor:\n  - 'a/*':\n      - fire: {tag: 'b'}\n")
    settings = config.load(config.MasterConfig, path)
    assert settings.reactor[0].glob == "a/*"
    opts = config.master_config(path)
    assert opts["reactor"] == [{"a/*": [{"fire": {"tag": "b"}}]}]
    assert config.typed(opts).reactor[0].glob == "a/*"
    assert config.load(config.MasterConfig, None).reactor == ()


def test_matches_come_in_config_order_and_reactor_events_never_match() -> None:
    found = rule_set("a/*", "a/b", "*", "a/?", "x*").match("a/b")
    assert [rule.glob for rule in found] == ["a/*", "a/b", "*", "a/?"]
    assert rule_set("*", "eventbus/*", "eventbus/reactor/result").match("eventbus/reactor/result") == ()
    assert [r.glob for r in rule_set("*", "eventbus/*").match("eventbus/journal/error")] == ["*", "eventbus/*"]


GLOB_PARTS = st.sampled_from(["a", "b", "/", "*", "?", "[ab]", "[!a]", "ab/", "salt/"])
TAG_PARTS = st.sampled_from(["a", "b", "/", "c", "ab/", "salt/", "x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(GLOB_PARTS, min_size=1, max_size=5).map("".join), min_size=1, max_size=12),
       st.lists(st.lists(TAG_PARTS, max_size=6).map("".join), min_size=1, max_size=10))
def test_the_bucketed_matcher_agrees_with_trying_every_glob(globs: list[str], tags: list[str]) -> None:
    matcher = rule_set(*globs)
    for tag in tags + tags:  # twice: the cached answer too
        expected = [glob for glob in globs if fnmatch.fnmatchcase(tag, glob)]
        assert [rule.glob for rule in matcher.match(tag)] == expected


def render(template: object, **context: object) -> object:
    compiled = rules.parse([{"t": [{"fire": {"tag": "x", "data": {"v": template}}}]}])[0].actions[0].fields
    return rules.render(compiled, {"tag": "t", "data": {}, "seq": 1, **context})["data"]["v"]


def test_templates_see_tag_data_and_seq() -> None:
    assert render("{{ tag }} {{ data.app }} {{ seq }}", data={"app": "shop"}, seq=42) == "t shop 42"
    assert render(["{{ data.n * 2 }}", {"k": "{{ data.n }}"}], data={"n": 3}) == ["6", {"k": "3"}]
    assert render("plain {text") == "plain {text"


def test_a_missing_value_or_a_sandbox_escape_fails_the_render() -> None:
    with pytest.raises(rules.RenderError, match="data.nope|nope"):
        render("{{ data.nope }}")
    with pytest.raises(rules.RenderError):
        render("{{ data.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(rules.RenderError):
        render("{{ ''.__class__.__mro__ }}")


def rendered_for(template: str, tag: str, data: dict) -> object:
    """``template`` rendered over the context the reactor builds for one event."""
    compiled = rules.parse([{"t": [{"fire": {"tag": "x", "data": {"v": template}}}]}])[0].actions[0].fields
    return rules.render(compiled, rules.context(7, tag, data))["data"]["v"]


def test_a_relayed_event_gives_templates_its_minion_id_and_the_minions_own_dict() -> None:
    relayed = {"id": "web1", "tag": "myco/deploy/done", "data": {"app": "web", "version": "7"},
               "cmd": "_minion_event", "_stamp": "2026-01-01T00:00:00.000000"}
    assert rendered_for("{{ id }} {{ payload.app }} {{ payload.version }}", "myco/deploy/done", relayed) \
        == "web1 web 7"
    assert rendered_for("{{ data.data.app }} {{ tag }} {{ seq }}", "myco/deploy/done", relayed) \
        == "web myco/deploy/done 7"


def test_an_event_of_the_master_itself_has_no_minion_id_and_its_data_is_the_payload() -> None:
    local = {"app": "shop", "id": "not-a-minion", "_stamp": "2026-01-01T00:00:00.000000"}
    assert rendered_for("{{ payload.app }} {{ id is none }}", "myco/deploy/x", local) == "shop True"
    assert rendered_for("{{ id or 'master' }}", "myco/deploy/x", local) == "master"
    # A minion's start event carries a text, not a dict: the payload stays the whole data.
    start = {"id": "web1", "cmd": "_minion_event", "data": "Minion web1 started at now"}
    assert rendered_for("{{ id }} {{ payload.data }}", "salt/minion/web1/start", start) \
        == "web1 Minion web1 started at now"
