"""IAM admin in the stand-in: service accounts, their keys and their IAM policies, over REST.

google-cloud-iam's `iam_admin_v1` client speaks gRPC only, so the project calls these paths over
REST (clients.IamRest); the stand-in routes them by hand, with the paths of the public REST
reference, and still parses every body and builds every answer with `iam_admin_v1`'s message
types. Keys are real RSA keys (made with `cryptography`), and the key file's `token_uri` is the
stand-in's OAuth token endpoint, which checks the JWT's signature before it issues a token.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from google.cloud import iam_admin_v1 as iam
from google.iam.v1 import iam_policy_pb2
from google.protobuf import empty_pb2, timestamp_pb2

from .rest import ApiError, Call, Route, invalid

if TYPE_CHECKING:
    from . import StandIn

SERVICE = "iam.googleapis.com"
_ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]{4,28}[a-z0-9])$")
_BASE = r"^/v1/projects/(?P<project>[^/:]+)/serviceAccounts"


def _route(method: str, suffix: str, request_type, handler, name: str, body: str | None = "*") -> Route:
    return Route(method, re.compile(_BASE + suffix + "$"), [], body, request_type, handler, SERVICE, name,
                 raw_pb=request_type is not None and not hasattr(request_type, "pb"), pass_match=True)


class IamAdminApi:
    def __init__(self, standin: "StandIn"):
        self.standin = standin
        self._lock = threading.Lock()
        self._accounts: dict[str, iam.ServiceAccount] = {}
        self._keys: dict[str, list[tuple[iam.ServiceAccountKey, bytes]]] = {}  # email → (key, public PEM)
        self.add_account(standin.default_compute_account, "Compute Engine default service account")

    def routes(self) -> list[Route]:
        acct = r"/(?P<account>[^/:]+)"
        return [
            _route("POST", "", iam.CreateServiceAccountRequest, self.create, "iam.serviceAccounts.create"),
            _route("GET", "", iam.ListServiceAccountsRequest, self.list, "iam.serviceAccounts.list", None),
            _route("GET", acct, None, self.get, "iam.serviceAccounts.get", None),
            _route("DELETE", acct, None, self.delete, "iam.serviceAccounts.delete", None),
            _route("POST", acct + ":getIamPolicy", iam_policy_pb2.GetIamPolicyRequest, self.get_iam_policy,
                   "iam.serviceAccounts.getIamPolicy"),
            _route("POST", acct + ":setIamPolicy", iam_policy_pb2.SetIamPolicyRequest, self.set_iam_policy,
                   "iam.serviceAccounts.setIamPolicy"),
            _route("POST", acct + ":testIamPermissions", iam_policy_pb2.TestIamPermissionsRequest,
                   self.test_iam_permissions, "iam.serviceAccounts.testIamPermissions"),
            _route("POST", acct + "/keys", iam.CreateServiceAccountKeyRequest, self.create_key,
                   "iam.serviceAccountKeys.create"),
            _route("GET", acct + "/keys", None, self.list_keys, "iam.serviceAccountKeys.list", None),
            _route("DELETE", acct + r"/keys/(?P<key>[^/:]+)", None, self.delete_key, "iam.serviceAccountKeys.delete",
                   None),
        ]

    # ------------------------------------------------------------ accounts

    def add_account(self, email: str, display_name: str = "") -> iam.ServiceAccount:
        account = iam.ServiceAccount(
            name=f"projects/{self.standin.project_id}/serviceAccounts/{email}", project_id=self.standin.project_id,
            unique_id=str(random.getrandbits(63)), email=email, display_name=display_name, etag=b"MDEwMjE5MjA=",
            oauth2_client_id=str(random.getrandbits(63)))
        with self._lock:
            self._accounts[email] = account
        return account

    def require_account(self, email: str) -> None:
        """400 as GCE and Cloud Run answer when a resource names a service account that does not exist."""
        with self._lock:
            exists = email in self._accounts
        if not exists:
            raise invalid(f"Service account {email} does not exist.")

    def _account(self, call: Call, match: re.Match, permission: str) -> tuple[iam.ServiceAccount, str]:
        project = match.group("project")
        if project != "-":
            self.standin.check_project(project)
        key = match.group("account")
        with self._lock:
            account = self._accounts.get(key) or next(
                (a for a in self._accounts.values() if a.unique_id == key), None)
        resource = f"projects/{self.standin.project_id}/serviceAccounts/{account.email if account else key}"
        self.standin.iam.require(call.member, permission, resource)
        if account is None:
            raise ApiError(404, f"Unknown service account {key}", status="NOT_FOUND")
        return account, resource

    def create(self, call: Call, request, match: re.Match) -> iam.ServiceAccount:
        project = match.group("project")
        self.standin.check_project(project)
        self.standin.iam.require(call.member, "iam.serviceAccounts.create", f"projects/{project}")
        if not _ACCOUNT_ID.match(request.account_id):
            raise invalid(f"Invalid value for field 'accountId': '{request.account_id}'. accountId must be 6-30 "
                          f"characters, start with a lowercase letter and match [a-z]([-a-z0-9]*[a-z0-9]).")
        email = f"{request.account_id}@{project}.iam.gserviceaccount.com"
        with self._lock:
            if email in self._accounts:
                raise ApiError(409, f"Service account {request.account_id} already exists within project "
                                    f"projects/{project}.", status="ALREADY_EXISTS")
        account = self.add_account(email, request.service_account.display_name)
        account.description = request.service_account.description
        return account

    def list(self, call: Call, request, match: re.Match) -> iam.ListServiceAccountsResponse:
        project = match.group("project")
        self.standin.check_project(project)
        self.standin.iam.require(call.member, "iam.serviceAccounts.list", f"projects/{project}")
        with self._lock:
            return iam.ListServiceAccountsResponse(accounts=[a for _, a in sorted(self._accounts.items())])

    def get(self, call: Call, request, match: re.Match) -> iam.ServiceAccount:
        return self._account(call, match, "iam.serviceAccounts.get")[0]

    def delete(self, call: Call, request, match: re.Match) -> empty_pb2.Empty:
        account, resource = self._account(call, match, "iam.serviceAccounts.delete")
        with self._lock:
            self._accounts.pop(account.email, None)
            self._keys.pop(account.email, None)
        self.standin.iam.drop_policy(resource)
        self.standin.iam.revoke(f"serviceAccount:{account.email}")
        return empty_pb2.Empty()

    def get_iam_policy(self, call: Call, request, match: re.Match):
        return self.standin.iam.get_policy(self._account(call, match, "iam.serviceAccounts.getIamPolicy")[1])

    def set_iam_policy(self, call: Call, request, match: re.Match):
        resource = self._account(call, match, "iam.serviceAccounts.setIamPolicy")[1]
        return self.standin.iam.set_policy(resource, request.policy)

    def test_iam_permissions(self, call: Call, request, match: re.Match):
        resource = self._account(call, match, "iam.serviceAccounts.get")[1]
        return iam_policy_pb2.TestIamPermissionsResponse(
            permissions=self.standin.iam.allowed(call.member, list(request.permissions), resource))

    # ------------------------------------------------------------ keys

    def create_key(self, call: Call, request, match: re.Match) -> iam.ServiceAccountKey:
        account, _ = self._account(call, match, "iam.serviceAccountKeys.create")
        try:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa
        except ImportError:
            raise ApiError(501, "The stand-in needs the 'cryptography' package to make service account keys.") from None
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()
        public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        key_id = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        key_file = {
            "type": "service_account", "project_id": self.standin.project_id, "private_key_id": key_id,
            "private_key": private_pem, "client_email": account.email, "client_id": account.oauth2_client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": f"{self.standin.url}/token",
        }
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        key = iam.ServiceAccountKey(
            name=f"projects/{self.standin.project_id}/serviceAccounts/{account.email}/keys/{key_id}",
            private_key_type=iam.ServiceAccountPrivateKeyType.TYPE_GOOGLE_CREDENTIALS_FILE,
            key_algorithm=iam.ServiceAccountKeyAlgorithm.KEY_ALG_RSA_2048,
            private_key_data=json.dumps(key_file).encode(), valid_after_time=now,
            key_origin=iam.ServiceAccountKeyOrigin.GOOGLE_PROVIDED, key_type=iam.ListServiceAccountKeysRequest.KeyType.USER_MANAGED)
        listed = iam.ServiceAccountKey(key)
        listed.private_key_data = b""
        with self._lock:
            self._keys.setdefault(account.email, []).append((listed, public_pem))
        return key

    def list_keys(self, call: Call, request, match: re.Match) -> iam.ListServiceAccountKeysResponse:
        account, _ = self._account(call, match, "iam.serviceAccountKeys.list")
        with self._lock:
            return iam.ListServiceAccountKeysResponse(keys=[k for k, _ in self._keys.get(account.email, [])])

    def delete_key(self, call: Call, request, match: re.Match) -> empty_pb2.Empty:
        account, _ = self._account(call, match, "iam.serviceAccountKeys.delete")
        key_id = match.group("key")
        with self._lock:
            keys = self._keys.get(account.email, [])
            kept = [k for k in keys if not k[0].name.endswith("/" + key_id)]
            if len(kept) == len(keys):
                raise ApiError(404, f"Key {key_id} not found.")
            self._keys[account.email] = kept
        return empty_pb2.Empty()

    # ------------------------------------------------------------ OAuth token endpoint

    def _verified_claims(self, jwt: str) -> dict | None:
        """The claims of a JWT signed by one of a service account's keys (None if it is not)."""
        head_b64, claims_b64, signature_b64 = (jwt.split(".") + ["", ""])[:3]

        def unb64(text: str) -> bytes:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

        try:
            header, claims = json.loads(unb64(head_b64)), json.loads(unb64(claims_b64))
        except ValueError:
            return None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return None
        email = claims.get("iss", "")
        with self._lock:
            keys = [pem for key, pem in self._keys.get(email, []) if key.name.endswith("/" + str(header.get("kid", "")))]
        if not keys or claims.get("exp", 0) < time.time():
            return None
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        public = serialization.load_pem_public_key(keys[0])
        try:
            public.verify(unb64(signature_b64), f"{head_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return None
        return claims

    def member_of_jwt(self, jwt: str) -> str | None:
        """A self-signed JWT used directly as a bearer token (what clients do with key files)."""
        claims = self._verified_claims(jwt)
        return f"serviceAccount:{claims['iss']}" if claims else None

    def token(self, body: bytes) -> dict:
        """`POST /token` with a JWT-bearer grant signed by one of an account's keys."""
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or "assertion" not in form:
            raise ApiError(400, "invalid_grant: unsupported grant type or missing assertion", status="INVALID_ARGUMENT")
        claims = self._verified_claims(form["assertion"])
        if claims is None:
            raise ApiError(400, "invalid_grant: Invalid JWT Signature.", status="INVALID_ARGUMENT")
        token = self.standin.iam.mint(f"serviceAccount:{claims['iss']}", lifetime_s=3600)
        return {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
