DROP TABLE IF EXISTS stock_watch;
