"""The SMTP sink: a real server that stores what it accepts and lists it."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest
from django.core.management import call_command

from devtools.smtp_sink import SmtpSink, refuse_matching


def mail(to: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "shop@example.com", to, subject
    message.set_content("Hello")
    return message


def test_sink_stores_lists_and_refuses_as_told(tmp_path, capsys):
    with SmtpSink(store_dir=tmp_path, refuse=refuse_matching("@bounce")) as sink:
        with smtplib.SMTP("127.0.0.1", sink.port) as client:
            client.send_message(mail("ann@example.com", "First"))
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                client.send_message(mail("bob@bounce.test", "Second"))
        assert refused.value.recipients["bob@bounce.test"][0] == 550
        [received] = sink.messages()
        assert (received.recipients, received.subject) == (["ann@example.com"], "First")
        assert received.body.strip() == "Hello"

    call_command("smtp_sink", "--list", "--store", str(tmp_path))
    out = capsys.readouterr().out
    assert "shop@example.com -> ann@example.com  First" in out
    assert "1 message(s) in" in out
