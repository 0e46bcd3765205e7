"""The certificate path a real domain takes (roles/nginx/tasks/letsencrypt.yml), proven
offline in the sqs scenario: certbot got the certificate over ACME from pebble, Let's
Encrypt's test server (molecule/sqs/prepare.yml), through a real HTTP-01 validation against
nginx; nginx serves it with its chain; a forced renewal reaches nginx by its deploy hook,
with a reload, not a restart, and the app untouched.

The default scenario serves its self-signed certificate (its own tests check it); these
tests skip there.
"""

import re

import pytest
from shoestring_host import host_time, invocation, journal, main_pid, unit_props

# The certificates these tests asked for on this host, one line each: every other one in
# certbot's archive was asked for by the scenario's converge or idempotence run.
ASKED = "/var/lib/shoestring-tests/certificates-asked"
PEBBLE_ROOT = "/var/lib/shoestring-tests/pebble-root.pem"
ARCHIVE = "/etc/letsencrypt/archive/{domain}"


@pytest.fixture(scope="module")
def domain(host):
    name = host.ansible.get_variables().get("nginx_domain", "")
    if not name:
        pytest.skip("this scenario serves a self-signed certificate (the sqs one takes ACME)")
    # pebble makes a new root at each start: the one that signs what it issues now.
    host.check_output(
        "mkdir -p /var/lib/shoestring-tests && curl -sf https://localhost:15000/roots/0 -o %s",
        PEBBLE_ROOT,
    )
    return name


def served(host, domain):
    """What a client asking for the domain on port 443 is shown: openssl s_client's
    verdict against pebble's root, and the certificates sent."""
    return host.run(
        "openssl s_client -connect 127.0.0.1:443 -servername %s -verify_hostname %s"
        " -CAfile %s -showcerts </dev/null",
        domain,
        domain,
        PEBBLE_ROOT,
    ).stdout


def served_serial(host, domain):
    return host.check_output(
        "openssl s_client -connect 127.0.0.1:443 -servername %s </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial",
        domain,
    )


def live_serial(host, domain):
    return host.check_output(
        "openssl x509 -noout -serial -in /etc/letsencrypt/live/%s/cert.pem", domain
    )


def issued(host, domain):
    """How many certificates certbot has been given for the domain."""
    names = host.file(ARCHIVE.format(domain=domain)).listdir()
    return sum(bool(re.fullmatch(r"cert\d+\.pem", name)) for name in names)


def asked(host, why):
    host.check_output("echo %s >> %s", why, ASKED)


def issuer(host, domain):
    """The ACME directory certbot renews from (the one that issued the certificate)."""
    (server,) = re.findall(
        r"^server = (\S+)$",
        host.file(f"/etc/letsencrypt/renewal/{domain}.conf").content_string,
        flags=re.MULTILINE,
    )
    return server


def test_nginx_serves_the_acme_certificate_with_its_chain(host, domain):
    shown = served(host, domain)
    assert "Verify return code: 0 (ok)" in shown, shown
    chain = re.findall(r"^ (\d+) s:(.*)\n\s+i:(.*)$", shown, flags=re.MULTILINE)
    assert len(chain) == 2, f"leaf and intermediate expected: {chain}"
    (_, leaf_subject, leaf_issuer), (_, _, intermediate_issuer) = chain
    assert "Pebble Intermediate CA" in leaf_issuer, leaf_issuer
    assert "Pebble Root CA" in intermediate_issuer, intermediate_issuer
    assert leaf_subject != leaf_issuer, "the self-signed certificate is still served"
    assert served_serial(host, domain) == live_serial(host, domain)


def test_http_redirects_to_https_but_not_the_challenge(host, domain):
    webroot = "/var/www/letsencrypt/.well-known/acme-challenge"
    token = "shoestring-test-token"
    host.check_output("mkdir -p %s && echo -n proof > %s/%s", webroot, webroot, token)
    try:
        challenge = host.check_output(
            "curl -s -w ' %%{http_code}' http://%s/.well-known/acme-challenge/%s", domain, token
        )
    finally:
        host.run("rm -f %s/%s", webroot, token)
    assert challenge == "proof 200"
    redirect = host.check_output(
        "curl -s -o /dev/null -w '%%{http_code} %%{redirect_url}' http://%s/campaigns/?a=1", domain
    )
    assert redirect == f"301 https://{domain}/campaigns/?a=1"


def test_site_yml_asked_for_one_certificate_only(host, domain):
    # Converge got one; the idempotence run, and any site.yml since, asked for none.
    ours = len(host.file(ASKED).content_string.split()) if host.file(ASKED).exists else 0
    assert issued(host, domain) == 1 + ours


def test_a_forced_renewal_reaches_nginx_without_restarting_anything(host, domain):
    nginx, app = main_pid(host, "nginx.service"), invocation(host, "shoestring-web.service")
    before = served_serial(host, domain)
    count = issued(host, domain)
    since = host_time(host)

    host.check_output("certbot renew --force-renewal --no-random-sleep-on-renew")
    asked(host, "forced-renewal")

    assert issued(host, domain) == count + 1
    after = live_serial(host, domain)
    assert after != before
    # The deploy hook reloaded nginx: the new serial is served by the same master process.
    assert served_serial(host, domain) == after
    assert main_pid(host, "nginx.service") == nginx
    reloads = [m for _, _, m in journal(host, "nginx.service", since) if m.startswith("Reloaded")]
    assert reloads, "nginx was not reloaded by the deploy hook"
    assert invocation(host, "shoestring-web.service") == app
    assert "Verify return code: 0 (ok)" in served(host, domain)
    print(f"\nrenewal: serial {before} -> {after}; nginx master {nginx} kept, app not restarted")


def test_certbots_timer_renews(host, domain):
    assert host.service("certbot.timer").is_enabled
    assert host.service("certbot.timer").is_running
    # Renewals go to the directory that issued the certificate: nginx_acme_server.
    assert issuer(host, domain) == host.ansible.get_variables()["nginx_acme_server"]
    assert unit_props(host, "certbot.timer", "NextElapseUSecRealtime")["NextElapseUSecRealtime"]


def test_a_new_acme_server_issues_the_certificate_at_the_next_run(host, domain, site):
    """Staging to production: changing nginx_acme_server gets a certificate from the new
    directory at the next site.yml, not at the next renewal (here the same pebble under
    another name)."""
    ours = host.ansible.get_variables()["nginx_acme_server"]
    other = "https://127.0.0.1:14000/dir"
    count, before = issued(host, domain), live_serial(host, domain)
    try:
        site("site.yml", "--tags", "nginx_configure", "-e", f"nginx_acme_server={other}")
        asked(host, "server-changed")
        assert issuer(host, domain) == other
        assert issued(host, domain) == count + 1
        moved = live_serial(host, domain)
        assert moved != before
        assert served_serial(host, domain) == moved, "nginx still serves the old certificate"
    finally:
        site("site.yml", "--tags", "nginx_configure")
        asked(host, "server-changed-back")
    assert issuer(host, domain) == ours
    assert served_serial(host, domain) == live_serial(host, domain) != moved
    assert issued(host, domain) == count + 2
