-- 003: the clipboard seq is allocated by the INSERT itself.
-- Until now clipboard.create ran START TRANSACTION; the clip_seq bump; the INSERT;
-- COMMIT: four round trips to the server. This trigger does the bump inside the
-- INSERT, which is then a single statement (INSERT ... RETURNING id, seq) and in
-- autocommit its own transaction. The guarantees are those of the old
-- transaction: the user's row lock orders concurrent creates on every worker,
-- each gets the next seq, and an INSERT that fails undoes its bump (a failed
-- statement is rolled back whole, the trigger's UPDATE with it), so no seq is
-- skipped. Any seq the INSERT names is overwritten here: there is one place that
-- hands them out.
-- Creating a trigger needs the TRIGGER privilege on the table (and, on a server
-- with binary logging, SUPER or log_bin_trust_function_creators=1).
CREATE TRIGGER clipboard_items_seq BEFORE INSERT ON clipboard_items FOR EACH ROW
BEGIN
    UPDATE users SET clip_seq = clip_seq + 1 WHERE id = NEW.user_id;
    IF ROW_COUNT() = 0 THEN
        -- the error a foreign key check gives (ER_NO_REFERENCED_ROW_2)
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = 'no such user', MYSQL_ERRNO = 1452;
    END IF;
    SET NEW.seq = (SELECT clip_seq FROM users WHERE id = NEW.user_id);
END;
