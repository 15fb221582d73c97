"""``yollava serve`` and ``yollava users ...`` (mounted by the main CLI; also ``python -m yollava.serve``).

Mounted in ``yollava/cli/main.py``::

    from .serve import serve_command, users_app
    app.command("serve")(serve_command)
    app.add_typer(users_app, name="users")

Nothing here imports FastAPI/uvicorn until ``serve`` runs, so the CLI works without the serve extra.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from .options import RECIPE_OPTIONS, recipe_options
from ..recipes import RecipeOptions
from ..paths import default_server_home

HomeOpt = typer.Option(None, "--home", help="The server's state folder (database, users' concepts, jobs). Default: $YOLLAVA_HOME/server.")


def _home(home: Path | None) -> Path:
    return Path(home) if home else default_server_home()


@recipe_options
def serve_command(
    model: str = typer.Option("pocket", "--model", "-m", help="'pocket' (embedded default), or a local folder / HF-cache id of a LLaVA or Qwen2-VL checkpoint."),
    home: Path = HomeOpt,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default; put TLS in front of anything else)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    recipe_options: RecipeOptions = RECIPE_OPTIONS,
    pool: list[Path] = typer.Option(None, "--pool", help="Folder(s) of generic photos for negatives (default: the shared pool)."),
    max_photos: int = typer.Option(None, help="Photos per concept upload (default 20)."),
    max_request_mb: int = typer.Option(None, help="Largest request body in MiB (default 64)."),
    max_concurrent: int = typer.Option(None, help="Generations running at once, token-interleaved (default 16); more wait."),
    max_concepts: int = typer.Option(None, help="Quota: concepts per user, ready or training (default 100)."),
    max_storage_mb: int = typer.Option(None, help="Quota: MiB a user's folder may hold, concepts and queued photos (default 1024)."),
    max_k: int = typer.Option(None, help="Most latent tokens an imported concept may have (default 64; --k must not exceed it)."),
    max_meta_kb: int = typer.Option(None, help="Largest metadata JSON of an imported concept, KiB (default 256, at most 1024)."),
    max_import_mb: int = typer.Option(None, help="Largest concept zip, and its tensor file inflated, MiB (default 16)."),
    max_megapixels: float = typer.Option(None, help="Largest photo accepted, megapixels, read from its header (default 24)."),
    max_photo_side: int = typer.Option(None, help="Decoded photos are shrunk to this many pixels on the longer side (default 1536)."),
    max_decoding: int = typer.Option(None, help="Photos decoded at once across all requests (default 2)."),
    max_decode_mb: int = typer.Option(None, help="Memory the photos being decoded may take at once, all requests, MiB (default 400)."),
    max_prompt_tokens: int = typer.Option(None, help="Longest prompt in tokens, concepts and photos included (default 4096)."),
    max_images: int = typer.Option(None, help="Pictures one image-generation request may ask for, its n (default 4; models that draw)."),
    max_images_per_hour: int = typer.Option(None, help="Quota: pictures a user may have drawn in any hour (default 100)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Mark jobs left unfinished by a previous run as failed instead of resuming them."),
    keep_uploads: bool = typer.Option(False, "--keep-uploads", help="Keep uploaded photos and checkpoints after a job ends."),
    threads: int = typer.Option(None, help="CPU threads for the model (torch.set_num_threads); 1 is often fastest on a busy shared machine."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    docs: bool = typer.Option(False, "--docs", help="Serve the interactive API documentation at /docs (and /openapi.json)."),
):
    """Serve the model over HTTP: OpenAI-compatible chat, concept training, recognition, and a web page at /."""
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as e:
        typer.echo(f"error: the server needs the serve extra ({e}); install with: pip install 'yollava[serve]'", err=True)
        raise typer.Exit(1) from None
    from ..engine import Engine
    from ..serve.config import ServerConfig, limits_from_flags

    try:
        chosen = recipe_options.to_recipe()
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    config = ServerConfig(model=model, home=_home(home), host=host, port=port, resume_jobs=not no_resume, keep_uploads=keep_uploads,
                          recipe_name=chosen.name, train=chosen.train, data=chosen.data, docs=docs)
    config.pool_dirs = list(pool) if pool else None
    try:
        limits = limits_from_flags(
            max_photos=max_photos, max_request_mb=max_request_mb, max_concurrent=max_concurrent, max_concepts=max_concepts,
            max_storage_mb=max_storage_mb, max_k=max_k, max_meta_kb=max_meta_kb, max_import_mb=max_import_mb,
            max_megapixels=max_megapixels, max_photo_side=max_photo_side, max_decoding=max_decoding, max_decode_mb=max_decode_mb, max_prompt_tokens=max_prompt_tokens,
            max_images=max_images, max_images_per_hour=max_images_per_hour,
        )
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    if config.train.k > limits.max_k:
        typer.echo(f"error: --k {config.train.k} is above --max-k {limits.max_k}", err=True)
        raise typer.Exit(1)
    config.limits = limits

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host}: API keys travel in clear text unless a TLS proxy is in front", err=True)
    if threads:
        import torch

        torch.set_num_threads(threads)
    typer.echo(f"loading {model} ...", err=True)
    try:
        engine = Engine.from_pretrained(model, concepts_dir=config.home / "unused-concepts")
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    engine.adapter.prepare_generation()  # the first chat should not pay for making the int8 copy
    app = create_app(config, engine)
    if not app.state.server.db.list_users():
        typer.echo(f"no users yet: create one with `yollava users add NAME --home {config.home}`", err=True)
    typer.echo(f"serving {config.served_model_name} on http://{host}:{port}/ (state in {config.home})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)


users_app = typer.Typer(help="Manage the server's users and their API keys.", no_args_is_help=True)


def _db(home: Path | None):
    from ..serve.db import Database

    return Database(_home(home) / "server.db")


def _user(db, name: str):
    user = db.get_user(name)
    if user is None:
        typer.echo(f"error: no user {name!r}", err=True)
        raise typer.Exit(1)
    return user


@users_app.command("add")
def users_add(name: str = typer.Argument(..., help="The user's name."), home: Path = HomeOpt):
    """Create a user and print their API key (shown this once; only a salted hash is stored)."""
    db = _db(home)
    try:
        user = db.add_user(name)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    key = db.new_key(user)
    typer.echo(f"created user {user.name!r}; API key (shown once, keep it):", err=True)
    typer.echo(key)


@users_app.command("key")
def users_key(name: str = typer.Argument(...), home: Path = HomeOpt):
    """Issue another API key for an existing user."""
    db = _db(home)
    typer.echo(db.new_key(_user(db, name)))


@users_app.command("list")
def users_list(home: Path = HomeOpt):
    """List users and how many active keys each has."""
    for u in _db(home).list_users():
        typer.echo(f"{u['id']}\t{u['name']}\t{u['keys']} key(s)")


@users_app.command("revoke")
def users_revoke(name: str = typer.Argument(...), home: Path = HomeOpt):
    """Revoke all of a user's API keys (their concepts stay)."""
    db = _db(home)
    n = db.revoke_keys(_user(db, name))
    typer.echo(f"revoked {n} key(s) of {name!r} (a running server refuses them from the next request)")


@users_app.command("rm")
def users_rm(name: str = typer.Argument(...), home: Path = HomeOpt, yes: bool = typer.Option(False, "--yes", help="Do not ask.")):
    """Delete a user, their keys, jobs and every concept file of theirs."""
    import shutil

    from ..serve.spaces import UserSpace

    db = _db(home)
    user = _user(db, name)
    if not yes:
        typer.confirm(f"delete user {name!r} and all their concepts?", abort=True)
    db.delete_user(user)
    shutil.rmtree(UserSpace(_home(home), user.id).root, ignore_errors=True)
    db.checkpoint()
    typer.echo(f"deleted user {name!r}")


app = typer.Typer(help="The yollava server.", no_args_is_help=True)
app.command("serve")(serve_command)
app.add_typer(users_app, name="users")
