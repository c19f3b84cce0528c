"""The SMKI Portal: web pages for subscribers and relying parties, served by `smki serve` under /portal/.

- visitors: who is asking (a client certificate the register grants Interface.PORTAL or Interface.OPERATOR,
  or a password session of smki.register.accounts), the session cookie, the CSRF token every form carries;
- pages: logging in and out, Organisation CSR upload, the ad hoc Device CSR form, batch ZIP upload, the
  batch list with live status, result downloads;
- repository_pages: search, certificate detail (decoded fields, status, issuer chain, PEM/DER), CRLs and ARLs;
- operator: the Issuing Authority's own staff: subscribers, every batch with approve and reject, recent
  audit entries and the trail's verification;
- rendering: Jinja2 templates (autoescape on for every template) and the static assets in this package.

Every action calls the actor method the CLI and the web services call (IssuingAuthority.issue_organisation,
issue_device, submit_batch, batch_files, approve_batch, reject_batch; Librarian.find, status_of;
SubscriberRegister.identify, list). A handler here parses its form, calls one method, renders the result.
"""

from smki.web.portal.routes import add_routes

__all__ = ["add_routes"]
