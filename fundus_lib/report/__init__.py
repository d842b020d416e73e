"""The book: executing chapters (``chapters``), tables beside the report's numbers (``tables``,
``numbers`` with ``report_numbers.yaml``), figures (``plots``), each page's provenance
(``provenance``) and the build's timing record (``build_record``); and per chapter the module that
builds its tables, figures and sentences from the evaluations: ``dataset`` (1), ``baselines`` (2),
``balancing`` (3), ``corruption`` (4), ``adversarial`` (5), ``attribution`` (6), ``conclusions`` (7).
"""
