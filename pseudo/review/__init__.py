"""What a reviewer looks at: diff, inspect, dump, the HTML report, DICOMDIR."""
