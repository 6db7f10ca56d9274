"""alerting — budget, spend and usage alerts delivered through an outbox, and spend reports.

- ``config``: ``[alerts]``, ``[[channels]]``, ``[[reports]]`` (``parse_alerting``, ``Alerting``, ``Channel``)
- ``records``: ``Alert`` and the delivery outcomes (``Delivered``, ``TransientError``, ``TerminalError``)
- ``rules``: what fires and when (``Rules.on_fresh`` per event, ``Rules.evaluate`` after each rollup)
- ``outbox``: the ``alerts`` and ``deliveries`` tables and the per-channel delivery workers
- ``channels`` / ``render``: Slack, PagerDuty Events v2, e-mail and webhook sends and payloads
- ``engine``: the above inside ``spendlake serve`` (``AlertEngine``)
- ``report`` / ``report_render`` / ``report_html``: spend reports (``build_report``, ``to_markdown``,
  ``to_csv``, ``to_html``, ``to_alert``)
"""
