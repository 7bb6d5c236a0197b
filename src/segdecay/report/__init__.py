"""The HTML and figure helpers every report shares (html), and the report of one training
run (train). Each study writes its own report with these helpers, in its own package."""

from segdecay.report.html import figure_to_img, html_table, lambda_axis, page

__all__ = ["figure_to_img", "html_table", "lambda_axis", "page"]
