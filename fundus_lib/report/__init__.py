"""The book: executing chapters (``chapters``), tables beside the report's numbers (``tables``,
``numbers`` with ``report_numbers.yaml``), figures (``plots``), each page's provenance
(``provenance``) and the build's timing record (``build_record``).
"""
