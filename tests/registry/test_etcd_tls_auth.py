"""The store against an etcd that demands TLS client certificates and a user with a password, as
production clusters are set up: a certificate authority made here, etcd's own auth switched on
over its Auth API, and a user whose role may only read and write under the store's prefix (so the
store is also shown to stay inside its prefix, leases and watches included)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aetcd.rpc as rpc  # type: ignore[import-untyped]
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from stepflow_mesh.registry.etcd_client import EtcdSettings, Get
from stepflow_mesh.registry.etcd_process import EtcdProcess, ServerTls
from stepflow_mesh.registry.etcd_store import EtcdStateStore
from stepflow_mesh.runtime.state import events as ev
from stepflow_mesh.runtime.state.base import StoreError, StoreUnavailable

PREFIX = "/secured"
USER, PASSWORD = "stepflow", "s3cret-pass"
ROOT_PASSWORD = "root-pass"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = issuer if issuer is not None else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if usage is None:  # the CA
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("stepflow-test-ca", ca_key, None, None)
    files: dict[str, Path] = {}
    for role, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"stepflow-{role}", key, (ca.subject, ca_key), usage)
        files[f"{role}_cert"] = folder / f"{role}.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"] = folder / f"{role}-key.pem"
        _write_key(files[f"{role}_key"], key)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return Pki(ca=folder / "ca.pem", **files)


@pytest.fixture(scope="module")
def secured_etcd(pki: Pki) -> Iterator[EtcdProcess]:
    tls = ServerTls(
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        ca_file=pki.ca,
        client_ca_file=pki.ca,
        client_cert_file=pki.client_cert,
        client_key_file=pki.client_key,
    )
    with EtcdProcess(unsafe_no_fsync=True, tls=tls) as etcd:
        yield etcd


def _credentials(pki: Pki) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )


@pytest.fixture(scope="module")
def auth_enabled(secured_etcd: EtcdProcess, pki: Pki) -> None:
    """Root (needed to switch auth on) and the store's user, limited to PREFIX."""
    asyncio.run(_enable_auth(secured_etcd.endpoint.removeprefix("https://"), pki))


async def _enable_auth(target: str, pki: Pki) -> None:
    async with grpc.aio.secure_channel(target, _credentials(pki)) as channel:
        auth = rpc.AuthStub(channel)
        await auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"))
        await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=ROOT_PASSWORD))
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.RoleAdd(rpc.AuthRoleAddRequest(name="stepflow-node"))
        prefix = PREFIX.encode()
        range_end = prefix[:-1] + bytes([prefix[-1] + 1])  # every key starting with PREFIX
        await auth.RoleGrantPermission(
            rpc.AuthRoleGrantPermissionRequest(
                name="stepflow-node",
                perm=rpc.Permission(
                    permType=rpc.Permission.READWRITE, key=prefix, range_end=range_end
                ),
            )
        )
        await auth.UserAdd(rpc.AuthUserAddRequest(name=USER, password=PASSWORD))
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=USER, role="stepflow-node"))
        await auth.AuthEnable(rpc.AuthEnableRequest())


def _settings(
    etcd: EtcdProcess, pki: Pki, *, password: str = PASSWORD, client_cert: bool = True
) -> EtcdSettings:
    tls: dict[str, str] = {"caFile": str(pki.ca)}
    if client_cert:
        tls |= {"certFile": str(pki.client_cert), "keyFile": str(pki.client_key)}
    return EtcdSettings(
        [etcd.endpoint],
        prefix=PREFIX,
        username=USER,
        password=password,
        tls=tls,
        request_timeout_secs=3.0,
    )


@pytest.fixture
async def store(
    secured_etcd: EtcdProcess, pki: Pki, auth_enabled: None
) -> AsyncIterator[EtcdStateStore]:
    opened = EtcdStateStore(_settings(secured_etcd, pki), lease_ttl_secs=2)
    await opened.open()
    yield opened
    await opened.close()


async def test_journal_leases_and_watches_work_over_tls_as_a_limited_user(
    store: EtcdStateStore,
) -> None:
    await store.leases.heartbeat("node-a", "127.0.0.1:7000")
    assert await store.acquire_lease("R", "node-a", 60) is None
    sequences = await store.append("R", [ev.root_run_created("R", "flow", [1], {})], owner="node-a")
    await store.append("R", [ev.steps_needed("R", 0, [0])], owner="node-a")
    assert [e.event["type"] for e in await store.read_journal("R")] == [
        "root_run_created",
        "steps_needed",
    ]
    assert sequences == [1]
    info = await store.leases.get_lease("R")
    assert info is not None and info.owner == "node-a"
    assert [n.id for n in await store.leases.list_orchestrators()] == ["node-a"]
    run = await store.get_run("R")
    assert run is not None and run.flow_id == "flow"

    # Watches carry the credentials too: another node sees the lease go.
    start = (await store.client.range(Get(PREFIX.encode(), count_only=True))).revision + 1
    orphans: asyncio.Queue[str] = asyncio.Queue()

    async def watch() -> None:
        async for orphan in store.leases.watch_orphans(start_revision=start):
            await orphans.put(orphan.run_id)

    watching = asyncio.create_task(watch())
    try:
        await store.leases.release_all("node-a")
        assert await asyncio.wait_for(orphans.get(), 15) == "R"
    finally:
        watching.cancel()
    assert await store.leases.get_lease("R") is None


async def test_a_wrong_password_is_an_error_naming_the_endpoint(
    secured_etcd: EtcdProcess, pki: Pki, auth_enabled: None
) -> None:
    store = EtcdStateStore(_settings(secured_etcd, pki, password="wrong"), lease_ttl_secs=2)
    try:
        with pytest.raises(StoreError) as failure:
            await store.open()
        message = str(failure.value)
        assert secured_etcd.endpoint in message and "authentication failed" in message
    finally:
        await store.close()


async def test_without_a_client_certificate_the_connection_is_refused(
    secured_etcd: EtcdProcess, pki: Pki, auth_enabled: None
) -> None:
    settings = _settings(secured_etcd, pki, client_cert=False)
    store = EtcdStateStore(settings, lease_ttl_secs=2)
    try:
        with pytest.raises(StoreUnavailable) as failure:
            await store.open()
        assert secured_etcd.endpoint in str(failure.value)
    finally:
        await store.close()
