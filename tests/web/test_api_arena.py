"""The arena over HTTP: two anonymous chat models answer, a vote reveals them and becomes a preference pair
(source arena) that reward and DPO jobs read, and the leaderboard ranks the models."""

from __future__ import annotations

from db.models import Comparison, Completion, Model
from tests.conftest import ADMIN, LABELER, TRAINER
from tests.support.records import add_chat_model


def test_a_battle_a_vote_and_the_leaderboard(client, session, api_settings):
    assert client.post("/api/arena/battles", auth=TRAINER, json={
        "messages": [{"role": "user", "content": "Hi"}]}).status_code == 409  # fewer than two chat models
    first, second = add_chat_model(session, api_settings, "chat-a", 1), add_chat_model(session, api_settings, "chat-b", 2)
    assert {m["name"] for m in client.get("/api/arena/models", auth=TRAINER).json()} == {"chat-a", "chat-b"}
    bad = client.post("/api/arena/battles", auth=LABELER, json={"messages": [{"role": "assistant", "content": "x"}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "messages"

    battle = client.post("/api/arena/battles", auth=LABELER, json={
        "messages": [{"role": "user", "content": "Name a colour."}], "max_new_tokens": 8, "seed": 3})
    assert battle.status_code == 201, battle.text
    body = battle.json()
    assert set(body) == {"battle_id", "left", "right"} and set(body["left"]) == {"text"}  # no names, no ids
    vote = client.post("/api/arena/votes", auth=LABELER, json={"battle_id": body["battle_id"], "choice": "left"})
    assert vote.status_code == 201
    assert vote.json()["left_model"] is None and vote.json()["right_model"] is None  # labelers are blind
    again = client.post("/api/arena/votes", auth=LABELER, json={"battle_id": body["battle_id"], "choice": "right"})
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["label"] == "a"  # one vote
    session.expire_all()
    stored = session.query(Comparison).one()
    assert stored.source == "arena" and stored.label.value == "a"

    board = client.get("/api/arena/leaderboard", auth=TRAINER).json()
    winner = session.get(Model, session.get(Completion, stored.completion_a_id).model_id)
    assert board[0]["name"] == winner.name and board[0]["rating"] > board[1]["rating"]
    assert all(row["votes"] == 1 for row in board)

    # The vote is a preference pair for reward and DPO jobs.
    from worker.jobs.preference_pairs import gather_pairs

    pairs = gather_pairs(session, dataset_file=None, project_ids=[], include_arena=True)
    assert len(pairs) == 1 and pairs[0]["source"] == "arena"
    assert pairs[0]["chosen"][0]["content"] == body["left"]["text"]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Name a colour."}]

    # The leaderboard's ratings are cached by the votes themselves: a new vote is counted at once.
    second_battle = client.post("/api/arena/battles", auth=LABELER, json={
        "messages": [{"role": "user", "content": "Name a fruit."}], "max_new_tokens": 8, "seed": 4}).json()
    assert client.post("/api/arena/votes", auth=LABELER, json={
        "battle_id": second_battle["battle_id"], "choice": "tie"}).status_code == 201
    assert client.get("/api/arena/leaderboard", auth=LABELER).json() == client.get(
        "/api/arena/leaderboard", auth=LABELER).json()
    assert all(row["votes"] == 2 for row in client.get("/api/arena/leaderboard", auth=LABELER).json())


def test_the_pool_of_arena_models(client, session, api_settings, users):
    trainer = users["trainer"]
    first, second = (add_chat_model(session, api_settings, "chat-a", 1, trainer),
                     add_chat_model(session, api_settings, "chat-b", 2, trainer))
    third = add_chat_model(session, api_settings, "chat-c", 3, trainer)
    everyone = client.get("/api/arena/models?everyone=true", auth=TRAINER).json()
    assert [(m["name"], m["in_arena"]) for m in everyone] == [("chat-a", True), ("chat-b", True), ("chat-c", True)]

    # Only the training team chooses; a labeler is refused and nothing changes.
    assert client.put("/api/arena/models", auth=LABELER, json={"model_ids": [first.id]}).status_code == 403
    assert client.put("/api/arena/models", auth=TRAINER, json={"model_ids": [first.id, 999]}).status_code == 422
    assert len(client.get("/api/arena/models", auth=LABELER).json()) == 3

    answer = client.put("/api/arena/models", auth=TRAINER, json={"model_ids": [first.id, third.id]})
    assert answer.status_code == 200, answer.text
    assert {m["name"]: m["in_arena"] for m in answer.json()} == {"chat-a": True, "chat-b": False, "chat-c": True}
    assert [m["name"] for m in client.get("/api/arena/models", auth=TRAINER).json()] == ["chat-a", "chat-c"]

    # Random battles draw from the pool only; a caller may still name any chat model.
    from web.services.arena import draw_battle

    drawn = {model for seed in range(20) for model in draw_battle(session, seed=seed)}
    assert drawn == {first.id, third.id}
    assert set(draw_battle(session, [second.id, first.id], seed=0)) == {first.id, second.id}

    # A pool of one cannot battle, and says how to fix it.
    client.put("/api/arena/models", auth=TRAINER, json={"model_ids": [first.id]})
    refused = client.post("/api/arena/battles", auth=LABELER, json={"messages": [{"role": "user", "content": "Hi"}]})
    assert refused.status_code == 409 and "pool" in refused.json()["detail"]


def test_a_vote_names_a_battle_the_arena_showed_the_voter_once(client, session, api_settings):
    """The attacks of issue 19 item 2, each refused with nothing stored and no name told: a vote on another
    person's battle, a second vote on one battle (by swapping the answers, or choosing again), a vote on a
    labeling pair that was never a battle, with the ids a labeler reads off the Label screen."""
    from tests.support.records import make_generate_job

    add_chat_model(session, api_settings, "chat-a", 1), add_chat_model(session, api_settings, "chat-b", 2)
    conversation = {"messages": [{"role": "user", "content": "Hi"}], "max_new_tokens": 4, "seed": 1}
    theirs = client.post("/api/arena/battles", auth=TRAINER, json=conversation).json()
    mine = client.post("/api/arena/battles", auth=LABELER, json=conversation).json()

    def arena_votes() -> int:
        session.expire_all()
        return session.query(Comparison).filter(Comparison.source == "arena").count()

    # Another person's battle: not found (its existence is not even confirmed), nothing revealed.
    refused = client.post("/api/arena/votes", auth=LABELER, json={"battle_id": theirs["battle_id"], "choice": "left"})
    assert refused.status_code == 404 and "chat-" not in refused.text
    # A battle id that is none.
    assert client.post("/api/arena/votes", auth=LABELER, json={"battle_id": mine["battle_id"] + 100,
                                                               "choice": "left"}).status_code == 404
    assert arena_votes() == 0

    # One vote per battle: a second one, whatever it chooses, answers the first.
    first = client.post("/api/arena/votes", auth=LABELER, json={"battle_id": mine["battle_id"], "choice": "left"})
    assert first.status_code == 201
    for choice in ("right", "tie", "left"):
        again = client.post("/api/arena/votes", auth=LABELER, json={"battle_id": mine["battle_id"], "choice": choice})
        assert again.status_code == 200 and again.json()["duplicate"]
        assert again.json()["comparison_id"] == first.json()["comparison_id"] and again.json()["label"] == "a"
    assert arena_votes() == 1

    # A labeling pair, with the ids the Label screen shows: the old request shape (answers named by their ids,
    # in either order) is no vote at all, and the pair's id is no battle of the labeler's.
    job = make_generate_job(session, prompts=1, answers=2)
    project = client.post("/api/labeling/projects", auth=TRAINER, json={"name": "p", "source_job_ids": [job.id]}).json()
    pair = client.get(f"/api/labeling/projects/{project['id']}/next", auth=LABELER).json()
    from db.models import LabelingPair

    completions = session.get(LabelingPair, pair["pair_id"])  # what the screen's ids stand for, had it shown them
    shown = [pair["left"]["answer_id"], pair["right"]["answer_id"]]
    for left, right in (shown, shown[::-1], (completions.completion_a_id, completions.completion_b_id)):
        old_shape = client.post("/api/arena/votes", auth=LABELER, json={
            "left_completion_id": left, "right_completion_id": right, "choice": "left"})
        assert old_shape.status_code == 422 and old_shape.json()["detail"][0]["loc"] == ["body", "battle_id"]
    assert pair["pair_id"] != mine["battle_id"]  # (the first pair and the trainer's battle are both id 1)
    as_battle = client.post("/api/arena/votes", auth=LABELER, json={"battle_id": pair["pair_id"], "choice": "left"})
    assert as_battle.status_code == 404
    assert arena_votes() == 1


def test_labelers_are_blind_to_model_names_unless_the_setting_is_off(client, session, api_settings, users,
                                                                      monkeypatch):
    """WORKBENCH_BLIND_LABELERS (on by default): a labeler is told no model's name (nor its job, parent or owner)
    in the model list they chat from, the arena's pool and leaderboard, or after a vote; the training team is.
    Turned off, labelers are told the names too."""
    from web.services import arena, list_models

    first, second = (add_chat_model(session, api_settings, "chat-a", 1),
                     add_chat_model(session, api_settings, "chat-b", 2))
    aliases = {f"model #{first.id}", f"model #{second.id}"}
    conversation = {"messages": [{"role": "user", "content": "Hi"}], "max_new_tokens": 4, "seed": 1}

    def told(auth) -> dict:
        battle = client.post("/api/arena/battles", auth=auth, json=conversation)
        assert battle.status_code == 201, battle.text
        battle = battle.json()
        vote = client.post("/api/arena/votes", auth=auth, json={"battle_id": battle["battle_id"], "choice": "tie"})
        assert vote.status_code == 201, vote.text
        listed = client.get("/api/models", auth=auth).json()
        return {"models": {m["name"] for m in listed}, "jobs": {m["job_id"] for m in listed},
                "pool": {m["name"] for m in client.get("/api/arena/models?everyone=true", auth=auth).json()},
                "board": {row["name"] for row in client.get("/api/arena/leaderboard", auth=auth).json()},
                "vote": vote.json()["left_model"], "one": client.get(f"/api/models/{first.id}", auth=auth).json()}

    session.query(Model).filter(Model.id == first.id).update({Model.job_id: None, Model.owner_id: users["trainer"].id})
    session.commit()
    labeler = told(LABELER)
    assert labeler["models"] == labeler["pool"] == labeler["board"] == aliases and labeler["vote"] is None
    assert labeler["one"]["name"] == f"model #{first.id}" and labeler["one"]["owner_id"] is None  # (it has one)
    trainer = told(TRAINER)
    assert trainer["models"] == trainer["pool"] == trainer["board"] == {"chat-a", "chat-b"}
    assert trainer["vote"]["name"] in {"chat-a", "chat-b"}
    # The services say the same to a labeler (the UI's path): a vote reveals nothing, the list is aliases.
    labeler_row = users["labeler"]
    battle = arena.record_answers(session, labeler_row, [{"role": "user", "content": "Hi"}],
                                  {"model_id": first.id, "text": "a"}, {"model_id": second.id, "text": "b"})
    assert arena.vote(session, labeler_row, battle["battle_id"], "left")["right_model"] is None
    assert {m["name"] for m in list_models(session=session, viewer=labeler_row)} == aliases

    monkeypatch.setenv("WORKBENCH_BLIND_LABELERS", "false")
    seeing = told(LABELER)
    assert seeing["models"] == seeing["pool"] == seeing["board"] == {"chat-a", "chat-b"}
    assert seeing["vote"]["name"] in {"chat-a", "chat-b"}


def test_a_trainer_moves_only_their_own_models_in_or_out_of_the_arena(client, session, api_settings, users):
    """The arena pool is its models' owners' (and admins'): another trainer can neither empty it nor take one of
    someone else's models out or put it in; a refused pool changes nothing."""
    from db.models import Role
    from db.users import create_user

    other = create_user(session, "trainer2", "trainer2-password", Role.trainer)
    session.commit()
    other_auth = ("trainer2", "trainer2-password")
    mine = add_chat_model(session, api_settings, "mine", 1, users["trainer"])
    theirs = add_chat_model(session, api_settings, "theirs", 2, other)
    nobody = add_chat_model(session, api_settings, "imported", 3)  # no owner: admins only

    def pool() -> dict:
        return {m["name"]: m["in_arena"] for m in client.get("/api/arena/models?everyone=true", auth=ADMIN).json()}

    everything = {"mine": True, "theirs": True, "imported": True}
    for model_ids in ([], [mine.id], [mine.id, theirs.id]):  # empty it; take theirs or the imported one out
        refused = client.put("/api/arena/models", auth=TRAINER, json={"model_ids": model_ids})
        assert refused.status_code == 403 and "belongs to someone else" in refused.json()["detail"]
        assert pool() == everything
    assert "'theirs'" in client.put("/api/arena/models", auth=TRAINER, json={"model_ids": []}).json()["detail"]
    # Their own, alone: taken out, and put back.
    kept = [theirs.id, nobody.id]
    assert client.put("/api/arena/models", auth=TRAINER, json={"model_ids": kept}).status_code == 200
    assert pool() == {**everything, "mine": False}
    assert client.put("/api/arena/models", auth=other_auth, json={"model_ids": [nobody.id]}).status_code == 200
    assert pool() == {"mine": False, "theirs": False, "imported": True}
    # An admin moves anyone's.
    assert client.put("/api/arena/models", auth=ADMIN, json={"model_ids": [mine.id, theirs.id]}).status_code == 200
    assert pool() == {"mine": True, "theirs": True, "imported": False}
