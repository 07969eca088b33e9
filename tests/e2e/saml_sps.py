"""SAML service providers that are not this project, as the tests run them: Apache httpd with
mod_auth_mellon (Debian's libapache2-mod-auth-mellon, built on Lasso), its own httpd on a free
loopback port with a configuration in a temp dir, stopped by pid (like the mod_auth_openidc
fixture)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from click.testing import CliRunner

from idp.cli import main
from tests.e2e import apache
from tests.e2e.apache import MODULES, require_module, run_as, running_httpd
from tests.e2e.conftest import Server, free_port

CREATE_METADATA = "/usr/sbin/mellon_create_metadata"
SOAP = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP"

MELLON_CONFIG = """\
ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{root}/httpd.pid"
DefaultRuntimeDir "{root}"
ErrorLog "{root}/error.log"
LogLevel warn auth_mellon:debug
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule env_module {modules}/mod_env.so
LoadModule include_module {modules}/mod_include.so
LoadModule auth_mellon_module {modules}/mod_auth_mellon.so
TypesConfig /etc/mime.types
DirectoryIndex index.shtml index.html
DocumentRoot "{docroot}"
<Directory "{docroot}">
  Require all granted
  Options +Includes
  AddOutputFilter INCLUDES .shtml
  AddType text/html .shtml
</Directory>
<Location />
  MellonEnable info
  MellonEndpointPath /mellon
  MellonSPPrivateKeyFile {root}/sp.key
  MellonSPCertFile {root}/sp.crt
  MellonSPMetadataFile {root}/sp.xml
  MellonIdPMetadataFile {root}/idp.xml
  MellonSecureCookie Off
  # mellon marks its cookies SameSite=None, which needs Secure, which plain-http loopback
  # cannot have (Chromium drops the cookie). The IdP and this SP share the host 127.0.0.1
  # (same site): without the attribute (Lax by default) the cookie reaches the ACS POST.
  SetEnv MELLON_DISABLE_SAMESITE 1
  MellonMergeEnvVars On ","
  MellonDefaultLoginPath /protected/
</Location>
<Location /protected>
  AuthType Mellon
  MellonEnable auth
  Require valid-user
</Location>
"""

PAGE = """<!doctype html><title>Mellon SP</title>
<h1>Mellon protected page</h1>
<dl>
<dt>email</dt><dd id="email"><!--#echo var="MELLON_email" --></dd>
<dt>given_name</dt><dd id="given_name"><!--#echo var="MELLON_given_name" --></dd>
<dt>family_name</dt><dd id="family_name"><!--#echo var="MELLON_family_name" --></dd>
<dt>preferred_username</dt>
<dd id="preferred_username"><!--#echo var="MELLON_preferred_username" --></dd>
<dt>npi</dt><dd id="npi"><!--#echo var="MELLON_npi" --></dd>
<dt>roles</dt><dd id="roles"><!--#echo var="MELLON_roles" --></dd>
<dt>facility</dt><dd id="facility"><!--#echo var="MELLON_facility" --></dd>
<dt>NameID</dt><dd id="nameid"><!--#echo var="MELLON_NAME_ID" --></dd>
</dl>
"""


@dataclass(frozen=True)
class MellonSp:
    base: str
    entity_id: str
    root: Path

    def url(self, path: str) -> str:
        return self.base + path

    def log(self) -> str:
        return apache.output(self.root)


def register_sp(env: dict[str, str], metadata: Path, *extra: str) -> dict:
    """`idp saml sps create --metadata-file F --json` (the operator's command)."""
    import json

    result = CliRunner().invoke(main, ["saml", "sps", "create", "--metadata-file",
                                       str(metadata), *extra, "--json"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@contextmanager
def mellon_sp(idp_server: Server, env: dict[str, str], *, soap: bool = True
              ) -> Iterator[MellonSp]:
    """`soap`: its metadata lists a SOAP SingleLogoutService beside the HTTP-Redirect one
    (False: only HTTP-Redirect, so a logout at the IdP reaches it through the browser)."""
    require_module("mod_auth_mellon.so", "libapache2-mod-auth-mellon")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    entity_id = f"{base}/sp"
    root = Path(tempfile.mkdtemp(prefix="mod-auth-mellon-"))
    subprocess.run([CREATE_METADATA, entity_id, f"{base}/mellon"], cwd=root, check=True,
                   capture_output=True)
    made = {path.suffix: path for path in root.iterdir()}  # <entityID made a file name>.*
    made[".key"].rename(root / "sp.key")
    made[".cert"].rename(root / "sp.crt")
    metadata = made[".xml"].read_text()
    # mod_auth_mellon answers SOAP LogoutRequests at the same endpoint (back-channel logout
    # from the IdP when the session ends there); mellon_create_metadata lists only Redirect.
    if soap:
        metadata = metadata.replace(
            "<SingleLogoutService ",
            f'<SingleLogoutService Binding="{SOAP}" Location="{base}/mellon/logout"/>\n'
            "    <SingleLogoutService ", 1)
    (root / "sp.xml").write_text(metadata)
    made[".xml"].unlink()
    idp_metadata = requests.get(idp_server.url("/saml/metadata"), timeout=10)
    assert idp_metadata.status_code == 200, idp_metadata.text[:300]
    (root / "idp.xml").write_bytes(idp_metadata.content)
    docroot = root / "htdocs"
    (docroot / "protected").mkdir(parents=True)
    (docroot / "protected" / "index.shtml").write_text(PAGE)
    (docroot / "bye.html").write_text("<!doctype html><p>Signed out of the SP</p>")
    (docroot / "readyz").write_text('{"status": "ready"}')
    for path in (root, docroot, docroot / "protected"):
        path.chmod(0o755)
    for name in ("sp.key", "sp.crt", "sp.xml", "idp.xml"):
        (root / name).chmod(0o644)  # a throw-away test key; httpd's children read it
    conf = root / "httpd.conf"
    conf.write_text(MELLON_CONFIG.format(root=root, port=port, user=run_as(), modules=MODULES,
                                         docroot=docroot))
    try:
        with running_httpd(conf, base, "httpd (mod_auth_mellon)"):
            yield MellonSp(base, entity_id, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
